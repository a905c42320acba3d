# METADATA
# title: write gating, cluster tiers and privileged AWS tools
# description: |
#   Everything is read-only unless a write grant of the caller's group (or of its own entry
#   in data.gateway.principals) names the cluster (glob) and the namespace (glob). Clusters in a
#   read-only tier (prod) take no writes at all except from a break-glass group. The AWS
#   tools that change IAM or CloudFormation (add_inline_policy, manage_eks_stacks
#   deploy/delete) are off unless data.gateway.aws_grants grants them.
package eks_mcp.gateway

writing if {
	tool_call
	input.tool.access == "write"
}

aws_write if {
	writing
	aws_write_tool
}

kubernetes_write if {
	writing
	not aws_write_tool
}

# The operation grants are matched on: the tool's operation, or `apply` for apply_yaml.
write_operation := input.tool.operation if {
	is_string(input.tool.operation)
} else := "apply"

read_only_tiers := object.get(data.gateway, "read_only_tiers", ["prod"])

in_read_only_tier if {
	is_string(input.target.cluster)
	cluster_tier in read_only_tiers
}

# --- Kubernetes write grants -----------------------------------------------------------

# The write grants of the caller's groups and of its own principal entry, and of those the
# ones covering this cluster and operation: each found once per request, however many
# namespaces, objects and rules ask. Grants live under the group (or principal) they are
# for, so a decision looks only at the caller's grants, however many teams the data holds.
principal_grants := [g |
	some s in principal_group_settings
	some g in object.get(s, "writes", [])
]

applicable_grants := [g |
	some g in principal_grants
	any_glob_match(g.clusters, input.target.cluster)
	grant_covers_operation(g)
]

grant_covers_operation(g) if object.get(g, "operations", null) == null

grant_covers_operation(g) if write_operation in g.operations

write_granted_namespace(ns) if {
	some g in applicable_grants
	any_glob_match(g.namespaces, ns)
}

write_deny_rules contains d if {
	kubernetes_write
	not in_read_only_tier
	some ns in input.target.namespaces
	not write_granted_namespace(ns)
	d := {
		"rule": "writes.no_grant",
		"reason": sprintf("namespace %s on cluster %s is read-only for %s: no write grant covers a %s there; ask the platform team for a write grant (groups.<group>.writes in the policy data)", [ns, cluster_name, who, write_operation]),
	}
}

write_deny_rules contains d if {
	kubernetes_write
	not in_read_only_tier
	some r in input.target.resources
	r.cluster_scoped
	not cluster_scoped_write_granted
	d := {
		"rule": "writes.cluster_scoped",
		"reason": sprintf("%s %s is cluster-scoped, and %s has no grant for cluster-scoped objects on cluster %s; ask the platform team", [r.kind, object_name(r), who, cluster_name]),
	}
}

# A kind the catalogue cannot place (a custom resource, or no kind at all) may be
# cluster-scoped: Karpenter NodePool, Kyverno ClusterPolicy, cert-manager ClusterIssuer are.
# Writing one needs a cluster-scoped grant, unless data.gateway.namespaced_custom_kinds names
# it (`Kind` for any API group, `group/Kind` for one).
write_deny_rules contains d if {
	kubernetes_write
	some r in input.target.resources
	object.get(r, "scope", "unknown") == "unknown"
	not known_namespaced_custom_kind(r)
	not cluster_scoped_write_granted
	d := {
		"rule": "writes.unknown_scope",
		"reason": sprintf("%s %s is a kind the gateway's catalogue cannot place, so it may be cluster-scoped, and %s has no grant for cluster-scoped objects on cluster %s; ask the platform team to list it in namespaced_custom_kinds if it is namespaced", [kind_label(r), object_name(r), who, cluster_name]),
	}
}

kind_label(r) := r.kind if is_string(r.kind)

kind_label(r) := "(no kind)" if not is_string(r.kind)

known_namespaced_custom_kind(r) if {
	is_string(r.kind)
	r.kind in object.get(data.gateway, "namespaced_custom_kinds", [])
}

known_namespaced_custom_kind(r) if {
	is_string(r.kind)
	is_string(r.api_version)
	parts := split(r.api_version, "/")
	count(parts) == 2
	concat("/", [parts[0], r.kind]) in object.get(data.gateway, "namespaced_custom_kinds", [])
}

cluster_scoped_write_granted if {
	some g in applicable_grants
	object.get(g, "cluster_scoped", false) == true
}

write_deny_rules contains d if {
	kubernetes_write
	input.target.all_namespaces
	not all_namespaces_write_granted
	d := {
		"rule": "writes.all_namespaces",
		"reason": sprintf("this %s names no namespace, so it could act in any namespace of cluster %s; give the namespace argument (or metadata.namespace) and retry", [input.tool.name, cluster_name]),
	}
}

all_namespaces_write_granted if {
	some g in applicable_grants
	"*" in g.namespaces
}

write_deny_rules contains d if {
	kubernetes_write
	count(input.target.resources) == 0
	not facts_unparseable
	d := {
		"rule": "writes.nothing",
		"reason": sprintf("this %s names no Kubernetes object; give kind and name, or a manifest with at least one object", [input.tool.name]),
	}
}

object_name(r) := r.name if {
	is_string(r.name)
} else := "(unnamed)"

tool_notices contains n if {
	kubernetes_write
	n := {"rule": "writes.granted", "reason": sprintf("a write grant covers this %s for %s on cluster %s", [write_operation, who, cluster_name])}
}

# --- tiers -----------------------------------------------------------------------------

write_deny_rules contains d if {
	writing
	in_read_only_tier
	not break_glass
	some ns in input.target.namespaces
	d := {
		"rule": "tiers.read_only",
		"reason": sprintf("namespace %s on cluster %s is read-only for %s (tier %s); ask for a break-glass grant", [ns, cluster_name, who, cluster_tier]),
	}
}

write_deny_rules contains d if {
	writing
	in_read_only_tier
	not break_glass
	count(input.target.namespaces) == 0
	d := {
		"rule": "tiers.read_only",
		"reason": sprintf("cluster %s is read-only for %s (tier %s); ask for a break-glass grant", [cluster_name, who, cluster_tier]),
	}
}

# A break-glass writer in a read-only tier still needs a grant (the shipped data grants the
# break-glass group everything); these repeat the grant checks that the tier rule replaced.
write_deny_rules contains d if {
	kubernetes_write
	in_read_only_tier
	break_glass
	some ns in input.target.namespaces
	not write_granted_namespace(ns)
	d := {
		"rule": "writes.no_grant",
		"reason": sprintf("namespace %s on cluster %s has no write grant for %s, even with break-glass; ask the platform team for a grant", [ns, cluster_name, who]),
	}
}

write_deny_rules contains d if {
	kubernetes_write
	in_read_only_tier
	break_glass
	some r in input.target.resources
	r.cluster_scoped
	not cluster_scoped_write_granted
	d := {
		"rule": "writes.cluster_scoped",
		"reason": sprintf("%s %s is cluster-scoped, and %s has no grant for cluster-scoped objects on cluster %s; ask the platform team", [r.kind, object_name(r), who, cluster_name]),
	}
}

tool_notices contains n if {
	writing
	in_read_only_tier
	break_glass
	n := {"rule": "tiers.break_glass", "reason": sprintf("break-glass write on cluster %s (tier %s) by %s", [cluster_name, cluster_tier, input.principal.id])}
}

# --- privileged AWS tools --------------------------------------------------------------

write_deny_rules contains d if {
	aws_write
	not aws_write_granted
	d := {
		"rule": "aws.not_granted",
		"reason": sprintf("%s%s changes AWS resources and is off unless granted; %s has no grant for it (data.gateway.aws_grants), ask the platform team", [input.tool.name, operation_suffix, who]),
	}
}

operation_suffix := sprintf(" (operation %s)", [input.tool.operation]) if {
	is_string(input.tool.operation)
} else := ""

aws_write_granted if {
	some g in data.gateway.aws_grants
	input.tool.name in g.tools
	names_principal(g)
	aws_operation_ok(g)
	aws_cluster_ok(g)
	aws_role_ok(g)
}

aws_operation_ok(g) if object.get(g, "operations", null) == null

aws_operation_ok(g) if input.tool.operation in g.operations

aws_cluster_ok(g) if object.get(g, "clusters", null) == null

aws_cluster_ok(g) if {
	is_string(input.target.cluster)
	any_glob_match(g.clusters, input.target.cluster)
}

aws_role_ok(g) if object.get(g, "roles", null) == null

aws_role_ok(g) if {
	is_string(input.tool.arguments.role_name)
	any_glob_match(g.roles, input.tool.arguments.role_name)
}

tool_notices contains n if {
	aws_write
	n := {"rule": "aws.granted", "reason": sprintf("an AWS grant allows %s%s for %s", [input.tool.name, operation_suffix, who])}
}
