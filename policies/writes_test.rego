package eks_mcp.gateway_test

test_granted_write_is_allowed if {
	d := data.eks_mcp.gateway.decision with input as write_call(alice, "dev-1", "patch", "Deployment", "payments")
	d.allow
	d.rules == ["writes.granted"]
}

test_write_without_grant_is_denied if {
	d := data.eks_mcp.gateway.decision with input as write_call(alice, "dev-1", "patch", "Deployment", "web")
	denied_by(d, "writes.no_grant")
	contains(d.reasons[0], "namespace web on cluster dev-1 is read-only for group payments-dev")
}

test_write_grant_by_principal_id if {
	d := data.eks_mcp.gateway.decision with input as write_call(nobody, "dev-1", "create", "ConfigMap", "tools")
		with data.gateway.principals as {"nobody": {"writes": [{"clusters": ["dev-1"], "namespaces": ["tools"]}]}}
	d.allow
}

test_write_grant_cluster_glob if {
	d := data.eks_mcp.gateway.decision with input as write_call(alice, "staging-9", "create", "ConfigMap", "payments")
	d.allow
	d2 := data.eks_mcp.gateway.decision with input as write_call(alice, "sandbox-1", "create", "ConfigMap", "payments")
		with data.gateway.groups["payments-dev"].clusters as ["*"]
	denied_by(d2, "writes.no_grant")
}

test_grant_operations_limit if {
	d := data.eks_mcp.gateway.decision with input as write_call(webby, "dev-1", "delete", "Deployment", "web")
	denied_by(d, "writes.no_grant")
	d2 := data.eks_mcp.gateway.decision with input as write_call(webby, "dev-1", "patch", "Deployment", "web")
	d2.allow
}

test_write_in_every_namespace_needs_a_grant if {
	inp := write_call(alice, "dev-1", "create", "ConfigMap", "payments")
	two := object.union(inp, {"target": object.union(inp.target, {
		"resources": [res("ConfigMap", "payments", "x"), res("ConfigMap", "kube-system", "x")],
		"namespaces": ["payments", "kube-system"],
	})})
	d := data.eks_mcp.gateway.decision with input as two
	denied_by(d, "writes.no_grant")
	contains(concat(" ", d.reasons), "kube-system")
}

test_write_without_namespace_is_denied if {
	inp := write_call(alice, "dev-1", "delete", "ConfigMap", null)
	d := data.eks_mcp.gateway.decision with input as object.union(inp, {"target": object.union(inp.target, {"all_namespaces": true})})
	denied_by(d, "writes.all_namespaces")
}

test_cluster_scoped_write_needs_cluster_scoped_grant if {
	inp := call(alice, tool_op("manage_k8s_resource", "write", "create"), target("dev-1", [cluster_res("Namespace", "team-x")]))
	denied_by(data.eks_mcp.gateway.decision, "writes.cluster_scoped") with input as inp
	data.eks_mcp.gateway.decision.allow with input as object.union(inp, {"principal": admin})
}

test_prod_is_read_only if {
	d := data.eks_mcp.gateway.decision with input as write_call(alice, "prod-eu-1", "patch", "Deployment", "payments")
	denied_by(d, "tiers.read_only")
	d.reasons == ["namespace payments on cluster prod-eu-1 is read-only for group payments-dev (tier prod); ask for a break-glass grant"]
}

test_prod_allows_break_glass if {
	d := data.eks_mcp.gateway.decision with input as write_call(breakglass, "prod-eu-1", "patch", "Deployment", "payments")
	d.allow
	"tiers.break_glass" in d.rules
}

test_break_glass_still_needs_a_grant if {
	d := data.eks_mcp.gateway.decision with input as write_call(breakglass, "prod-eu-1", "patch", "Deployment", "payments")
		with data.gateway.groups["sre-breakglass"].writes as []
	denied_by(d, "writes.no_grant")
}

test_unknown_cluster_counts_as_prod if {
	d := data.eks_mcp.gateway.decision with input as write_call(admin, "mystery", "patch", "Deployment", "payments")
	denied_by(d, "tiers.read_only")
}

test_empty_write_is_denied if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("apply_yaml", "write"), target("dev-1", []))
	denied_by(d, "writes.nothing")
}

test_inline_policy_off_unless_granted if {
	inp := call(alice, object.union(tool("add_inline_policy", "write"), {"arguments": {"role_name": "eks-node", "policy_name": "p"}, "targets_cluster": false}), empty_target)
	d := data.eks_mcp.gateway.decision with input as inp
	denied_by(d, "aws.not_granted")
	data.eks_mcp.gateway.decision.allow with input as object.union(inp, {"principal": admin})
}

test_inline_policy_role_glob if {
	inp := call(admin, object.union(tool("add_inline_policy", "write"), {"arguments": {"role_name": "OrgAdmin"}, "targets_cluster": false}), empty_target)
	denied_by(data.eks_mcp.gateway.decision, "aws.not_granted") with input as inp
}

test_stack_deploy_off_unless_granted if {
	inp := call(alice, tool_op("manage_eks_stacks", "write", "deploy"), target("dev-1", []))
	d := data.eks_mcp.gateway.decision with input as inp
	denied_by(d, "aws.not_granted")
	contains(d.reasons[0], "manage_eks_stacks (operation deploy)")
	data.eks_mcp.gateway.decision.allow with input as object.union(inp, {"principal": admin})
}

test_stack_delete_in_prod_needs_break_glass if {
	inp := call(admin, tool_op("manage_eks_stacks", "write", "delete"), target("prod-1", []))
	d := data.eks_mcp.gateway.decision with input as inp
	denied_by(d, "tiers.read_only")
	denied_by(d, "aws.not_granted")
}

test_stack_describe_is_a_read if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool_op("manage_eks_stacks", "read", "describe"), target("dev-1", []))
	d.allow
}

test_another_groups_grants_do_not_apply if {
	# web-dev's grant covers namespace web on dev clusters; alice (payments-dev) has none there,
	# even when payments-dev may read it.
	d := data.eks_mcp.gateway.decision with input as write_call(alice, "dev-1", "patch", "Deployment", "web")
		with data.gateway.groups["payments-dev"].namespaces as ["*"]
	denied_by(d, "writes.no_grant")
}

custom_write(p, api_version, kind) := call(p, tool_op("manage_k8s_resource", "write", "create"), target("dev-1", [object.union(res(kind, "payments", "x"), {"api_version": api_version, "scope": "unknown"})]))

test_a_kind_the_catalogue_cannot_place_needs_a_cluster_scoped_grant if {
	d := data.eks_mcp.gateway.decision with input as custom_write(alice, "karpenter.sh/v1", "NodePool")
	denied_by(d, "writes.unknown_scope")
	contains(d.reasons[0], "NodePool x is a kind the gateway's catalogue cannot place")
	d2 := data.eks_mcp.gateway.decision with input as custom_write(admin, "karpenter.sh/v1", "NodePool")
	d2.allow
}

test_namespaced_custom_kinds_from_data_are_gated_by_namespace_grants if {
	d := data.eks_mcp.gateway.decision with input as custom_write(alice, "monitoring.coreos.com/v1", "ServiceMonitor")
	d.allow
	# The same kind name from another API group is not placed.
	d2 := data.eks_mcp.gateway.decision with input as custom_write(alice, "evil.example.com/v1", "ServiceMonitor")
	denied_by(d2, "writes.unknown_scope")
	d3 := data.eks_mcp.gateway.decision with input as custom_write(alice, "evil.example.com/v1", "Widget")
		with data.gateway.namespaced_custom_kinds as ["Widget"]
	d3.allow
}
