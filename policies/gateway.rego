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
#   An allowed call may still need the person's confirmation first: `confirm` (confirm.rego)
#   is then the message and the fields the gateway asks for, otherwise null.
#   and may ask for extra redaction profiles through `redact_profiles`. The sets are
#   assembled from groups (auth_deny, method_deny, tool_deny, read_deny_rules, ...), see
#   `deny` below.
package eks_mcp.gateway

# The one decision object the gateway reads.
decision := {
	"allow": allow,
	"reasons": reasons,
	"redact": sort(redact_profiles),
	"rules": rules,
	"role": role,
	"confirm": confirm,
}

allow if count(deny) == 0

# What denies this request. regorus evaluates every definition of a set it is asked for,
# so the rules are grouped and only the groups that can apply to this request are
# evaluated: authentication, then the method, then for tools/call the tool, read, write,
# Secret and manifest-content groups. To add a rule, add to the group it belongs to
# (e.g. `tool_deny contains {"rule": ..., "reason": ...} if { ... }`).
deny := auth_deny if {
	not authenticated
} else := method_deny if {
	not tool_call
} else := d if {
	d := (((((method_deny | tool_deny) | read_deny) | write_deny) | secret_deny) | content_deny)
}

read_deny := read_deny_rules if {
	reading
} else := set()

write_deny := write_deny_rules if {
	writing
} else := set()

secret_deny := secret_deny_rules if {
	count(secret_resources) > 0
} else := set()

content_deny := content_deny_rules if {
	kubernetes_write
	count(input.target.objects) > 0
} else := set()

# Notes recorded on an allowed request, grouped the same way.
notices := method_notices if {
	not tool_call
} else := tool_notices

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

auth_deny contains {
	"rule": "auth.anonymous",
	"reason": "the request carries no authenticated principal; sign in to the gateway and retry",
} if {
	not authenticated
}

authenticated if {
	is_string(input.principal.id)
	input.principal.id != ""
}

method_deny contains d if {
	some pattern in object.get(data.gateway.methods, "denied", [])
	glob_match(pattern, input.mcp.method)
	d := {
		"rule": "methods.denied",
		"reason": sprintf("the MCP method %s is disabled on this gateway by the platform team", [input.mcp.method]),
	}
}

method_deny contains d if {
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

method_notices contains n if {
	input.mcp.method != "tools/call"
	n := {"rule": "methods.allowed", "reason": sprintf("%s is allowed for authenticated principals", [input.mcp.method])}
}

# --- facts tested negatively ---------------------------------------------------------

# Rego engines differ on `not` over a call whose argument is undefined: OPA reads
# `not is_object(input.tool)` as undefined when input.tool is absent (it binds the argument
# before negating), regorus as true. So a fact tested with `not` is a rule (negating a rule
# means the same on every engine) or reads the field through object.get with a default, and a
# document that lacks a field is denied alike on both (docs/policy.md, "The policies under
# OPA"; tests/it/opa.rs compares the engines).
facts_unparseable if is_string(input.target.parse_error)

aws_write_tool if input.tool.name in data.gateway.aws_write_tools

# --- principal -------------------------------------------------------------------------

# The principal's groups plus the groups every principal has (data.gateway.default_groups).
principal_groups contains g if some g in input.principal.groups

principal_groups contains g if some g in object.get(data.gateway, "default_groups", [])

# The settings that apply to the caller: those of its groups (data.gateway.groups) and its
# own entry in data.gateway.principals (a principal entry works like a group of one).
principal_group_settings contains s if {
	some g in principal_groups
	s := data.gateway.groups[g]
}

principal_group_settings contains s if {
	s := data.gateway.principals[input.principal.id]
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

# Globs as in data: `*` and `?` wildcards, no delimiters; names without wildcards compare
# exactly. glob.match is the slow path, so the common shapes are plain string tests: exact
# names, `prefix*` and `*suffix` (one `*` and no other glob syntax: `*?[{\`); only a
# pattern of another shape (`*-prod-*`, `team-?`) reaches glob.match. The cheap string
# tests come before each shape's regex, so the regex runs only for a pattern that would
# match. Every definition is written out inline (function calls dominate evaluation cost),
# and there is no `else` chain: regorus's bytecode compiler mis-evaluates a function whose
# later `else` branches iterate.
any_glob_match(patterns, value) if {
	is_string(value)
	value in patterns
}

any_glob_match(patterns, value) if {
	is_string(value)
	some p in patterns
	endswith(p, "*")
	startswith(value, trim_suffix(p, "*"))
	regex.match(`^[^*?\[{\\]*\*$`, p)
}

any_glob_match(patterns, value) if {
	is_string(value)
	some p in patterns
	startswith(p, "*")
	endswith(value, trim_prefix(p, "*"))
	regex.match(`^\*[^*?\[{\\]*$`, p)
}

any_glob_match(patterns, value) if {
	is_string(value)
	some p in patterns
	regex.match(`[*?\[{\\]`, p)
	not regex.match(`^(\*[^*?\[{\\]*|[^*?\[{\\]*\*)$`, p)
	glob.match(p, null, value)
}

glob_match(pattern, value) if any_glob_match([pattern], value)

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
	not aws_write_tool
	not some_kubernetes_grant
}

tool_never_allowed if {
	input.tool.access == "write"
	aws_write_tool
	not some_aws_grant
}

some_kubernetes_grant if {
	some s in principal_group_settings
	count(object.get(s, "writes", [])) > 0
}

some_aws_grant if {
	some g in data.gateway.aws_grants
	input.tool.name in g.tools
	names_principal(g)
}
