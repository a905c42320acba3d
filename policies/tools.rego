# METADATA
# title: tool calls, clusters and namespaces
# description: |
#   Every tools/call: the tool must be in the catalogue, its facts must be established, the
#   cluster must be allowed for one of the caller's groups, and every namespace it reads
#   must be on that group's namespace allowlist. Listings across all namespaces need a
#   group with cluster_wide_read. Writes are gated separately (writes.rego).
package eks_mcp.gateway

tool_call if input.mcp.method == "tools/call"

tool_deny contains d if {
	tool_call
	# object.get: an absent input.tool denies like a null one on every engine (gateway.rego).
	not is_object(object.get(input, "tool", null))
	d := {
		"rule": "tools.missing",
		"reason": "the tools/call request names no tool; give params.name",
	}
}

tool_deny contains d if {
	tool_call
	input.tool.known == false
	d := {
		"rule": "tools.unknown",
		"reason": sprintf("the tool %s is not in the gateway's tool catalogue, and unknown tools are denied; ask the platform team to classify it in policies/catalogue.yaml", [input.tool.name]),
	}
}

tool_deny contains d if {
	tool_call
	is_string(input.target.parse_error)
	d := {
		"rule": "facts.unparseable",
		"reason": sprintf("the gateway could not establish what this %s call touches (%s); correct the arguments and retry", [input.tool.name, input.target.parse_error]),
	}
}

tool_deny contains d if {
	tool_call
	input.tool.targets_cluster
	not is_string(object.get(input, ["target", "cluster"], null))
	d := {
		"rule": "clusters.missing",
		"reason": sprintf("%s needs a cluster_name; give the EKS cluster to act on", [input.tool.name]),
	}
}

# --- clusters --------------------------------------------------------------------------

tool_deny contains d if {
	tool_call
	is_string(input.target.cluster)
	not cluster_allowed
	d := {
		"rule": "clusters.not_allowed",
		"reason": sprintf("cluster %s is not open to %s; use one of your team's clusters or ask the platform team for access", [input.target.cluster, who]),
	}
}

# A group's cluster allowlist opens the cluster; so does a write grant on it (looked at
# only when no group opens it, which keeps large grant lists off the common path). Not an
# `else` chain: regorus's bytecode compiler mis-evaluates an `else` branch that iterates.
cluster_allowed if group_cluster_allowed

cluster_allowed if {
	not group_cluster_allowed
	some g in principal_grants
	any_glob_match(g.clusters, input.target.cluster)
}

group_cluster_allowed if count(cluster_group_settings) > 0

# The caller's group settings whose cluster allowlist matches the target cluster, found
# once per request (glob matching is the expensive part of a read decision) and shared by
# the cluster and namespace checks.
cluster_group_settings := [s |
	some s in principal_group_settings
	any_glob_match(s.clusters, input.target.cluster)
]

# --- namespaces (reads) ----------------------------------------------------------------

reading if {
	tool_call
	input.tool.access in {"read", "sensitive"}
}

read_deny_rules contains d if {
	reading
	some ns in input.target.namespaces
	not namespace_readable(ns)
	d := {
		"rule": "namespaces.not_allowed",
		"reason": sprintf("namespace %s on cluster %s is not on the namespace allowlist of %s; ask for one of your team's namespaces", [ns, cluster_name, who]),
	}
}

cluster_name := input.target.cluster if {
	is_string(input.target.cluster)
} else := "(none)"

# On the allowlist of a group for this cluster, or (looked at only otherwise) a namespace
# the principal may write to.
namespace_readable(ns) if group_namespace_readable(ns)

namespace_readable(ns) if {
	not group_namespace_readable(ns)
	some g in principal_grants
	any_glob_match(g.clusters, input.target.cluster)
	any_glob_match(g.namespaces, ns)
}

group_namespace_readable(ns) if {
	some s in cluster_group_settings
	any_glob_match(s.namespaces, ns)
}

read_deny_rules contains d if {
	reading
	input.target.all_namespaces
	not cluster_wide_reader
	d := {
		"rule": "namespaces.all_namespaces",
		"reason": sprintf("%s reaches all namespaces of cluster %s, which only groups granted cluster-wide read may do; name one namespace of yours (the namespace argument) and retry", [input.tool.name, cluster_name]),
	}
}

cluster_wide_reader if {
	some s in cluster_group_settings
	object.get(s, "cluster_wide_read", false) == true
}

# --- allowed reads ---------------------------------------------------------------------

tool_notices contains n if {
	reading
	input.tool.access == "read"
	# No group list here: the principal and groups are in the audit record, and formatting
	# them into this note was a measurable share of every allowed read's cost.
	n := {"rule": "reads.allowed", "reason": concat(" ", [input.tool.name, "is a read within the caller's cluster and namespace allowlists"])}
}

# Sensitive reads (pod logs, events, CloudWatch logs) are allowed where reads are, and
# their results go through the baseline secret detectors.
tool_notices contains n if {
	reading
	input.tool.access == "sensitive"
	n := {"rule": "sensitive.redacted", "reason": sprintf("%s returns sensitive data; secrets in the result are redacted", [input.tool.name])}
}
