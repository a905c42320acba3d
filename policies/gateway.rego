# METADATA
# title: eks-mcp-gateway decision
# description: |
#   The entrypoint `decision` the gateway evaluates for every MCP request, and the helpers
#   the other files of this package share. The input document and the decision are
#   described in docs/policy.md; the data in data.yaml.
#
#   Rules add entries to two sets:
#     deny    contains {"rule": id, "reason": sentence}   any entry denies the request
#     notices contains {"rule": id, "reason": sentence}   recorded on an allowed request
#   and may ask for extra redaction profiles through `redact_profiles`.
package eks_mcp.gateway

# The one decision object the gateway reads.
decision := {
	"allow": allow,
	"reasons": reasons,
	"redact": sort(redact_profiles),
	"rules": rules,
	"role": role,
}

allow if count(deny) == 0

default allow := false

reasons := sort([d.reason | some d in deny]) if {
	count(deny) > 0
} else := sort([n.reason | some n in notices])

rules := sort({d.rule | some d in deny}) if {
	count(deny) > 0
} else := sort({n.rule | some n in notices})

# Every response is scanned by the baseline detectors; rules may add profiles.
redact_profiles contains "baseline"

# The signing role (a name from the gateway config's signing.assume_role.roles) for this
# call, by access class; null signs with the gateway's default role.
role := r if {
	r := data.gateway.signing_roles[input.tool.access]
	is_string(r)
} else := null

# --- methods ---------------------------------------------------------------------------

deny contains {
	"rule": "auth.anonymous",
	"reason": "the request carries no authenticated principal; sign in to the gateway and retry",
} if {
	not authenticated
}

authenticated if {
	is_string(input.principal.id)
	input.principal.id != ""
}

deny contains d if {
	some pattern in object.get(data.gateway.methods, "denied", [])
	glob_match(pattern, input.mcp.method)
	d := {
		"rule": "methods.denied",
		"reason": sprintf("the MCP method %s is disabled on this gateway by the platform team", [input.mcp.method]),
	}
}

deny contains d if {
	input.mcp.method != "tools/call"
	not method_allowed
	d := {
		"rule": "methods.not_allowed",
		"reason": sprintf("the MCP method %s is not among the methods this gateway passes on", [input.mcp.method]),
	}
}

method_allowed if {
	some pattern in data.gateway.methods.allowed
	glob_match(pattern, input.mcp.method)
}

notices contains n if {
	input.mcp.method != "tools/call"
	n := {"rule": "methods.allowed", "reason": sprintf("%s is allowed for authenticated principals", [input.mcp.method])}
}

# --- principal -------------------------------------------------------------------------

# The principal's groups plus the groups every principal has (data.gateway.default_groups).
principal_groups contains g if some g in input.principal.groups

principal_groups contains g if some g in object.get(data.gateway, "default_groups", [])

# Group settings of the principal's groups that data.gateway.groups describes.
principal_group_settings contains s if {
	some g in principal_groups
	s := data.gateway.groups[g]
}

# "group a, b" or "principal alice (no group)": how reasons name the caller.
who := sprintf("group %s", [concat(", ", sort(principal_groups))]) if {
	count(principal_groups) > 0
} else := sprintf("principal %s (no group)", [input.principal.id])

# A grant or setting names the principal directly or through one of its groups.
names_principal(entry) if input.principal.id in object.get(entry, "principals", [])

names_principal(entry) if {
	some g in object.get(entry, "groups", [])
	g in principal_groups
}

# --- clusters and tiers ----------------------------------------------------------------

# A glob as in data: `*` and `?` wildcards, no delimiters. Plain names compare exactly.
glob_match(pattern, value) if {
	is_string(value)
	pattern == value
}

glob_match(pattern, value) if {
	is_string(value)
	is_string(pattern)
	pattern != value
	is_glob(pattern)
	glob.match(pattern, null, value)
}

is_glob(p) if contains(p, "*")

is_glob(p) if contains(p, "?")

is_glob(p) if contains(p, "[")

is_glob(p) if contains(p, "{")

any_glob_match(patterns, value) if {
	some p in patterns
	glob_match(p, value)
}

# The tier of the target cluster: the first tier in data.gateway.tiers with a matching
# pattern, else data.gateway.default_tier (prod unless the data says otherwise).
cluster_tier := data.gateway.tiers[min(idx)].name if {
	idx := {i |
		some i, t in data.gateway.tiers
		any_glob_match(t.clusters, input.target.cluster)
	}
	count(idx) > 0
} else := object.get(data.gateway, "default_tier", "prod")

break_glass if {
	some g in object.get(data.gateway, "break_glass_groups", [])
	g in principal_groups
}

# --- tools/list ------------------------------------------------------------------------

# Evaluated by the gateway once per tool of a tools/list result, with input.tool set to the
# catalogue's probe for the tool (its least access class, no arguments): false hides the
# tool from the caller. Tools the principal may call at least sometimes stay visible; each
# call is still decided on its own.
tool_visible if {
	authenticated
	input.tool.known
	not tool_never_allowed
}

tool_never_allowed if {
	input.tool.access == "write"
	not input.tool.name in data.gateway.aws_write_tools
	not some_kubernetes_grant
}

tool_never_allowed if {
	input.tool.access == "write"
	input.tool.name in data.gateway.aws_write_tools
	not some_aws_grant(input.tool.name)
}

some_kubernetes_grant if {
	some g in data.gateway.grants
	names_principal(g)
}

some_aws_grant(tool) if {
	some g in data.gateway.aws_grants
	tool in g.tools
	names_principal(g)
}
