package eks_mcp.gateway_test

test_ping_is_allowed_with_baseline_redaction if {
	d := data.eks_mcp.gateway.decision with input as method_input(nobody, "ping")
	d.allow
	d.redact == ["baseline"]
	d.rules == ["methods.allowed"]
	d.role == null
}

test_non_tool_methods_are_allowed if {
	every m in ["initialize", "tools/list", "resources/read", "prompts/get", "server/discover", "notifications/initialized", "stream/get"] {
		d := data.eks_mcp.gateway.decision with input as method_input(alice, m)
		d.allow
	}
}

test_unlisted_method_is_denied if {
	d := data.eks_mcp.gateway.decision with input as method_input(alice, "sampling/createMessage")
	denied_by(d, "methods.not_allowed")
	contains(d.reasons[0], "sampling/createMessage")
}

test_data_can_deny_a_method if {
	d := data.eks_mcp.gateway.decision with input as method_input(alice, "resources/read")
		with data.gateway.methods.denied as ["resources/*"]
	denied_by(d, "methods.denied")
}

test_anonymous_is_denied if {
	d := data.eks_mcp.gateway.decision with input as method_input(principal("", []), "ping")
	denied_by(d, "auth.anonymous")
}

test_deny_reasons_are_sorted_and_complete if {
	d := data.eks_mcp.gateway.decision with input as call(nobody, tool("list_k8s_resources", "read"), object.union(target("staging-1", [res("Pod", null, null)]), {"all_namespaces": true}))
	d.allow == false
	count(d.reasons) == count(d.rules)
	d.reasons == sort(d.reasons)
}

test_default_groups_apply_to_everyone if {
	d := data.eks_mcp.gateway.decision with input as read_call(nobody, "dev-1", "ConfigMap", "payments")
		with data.gateway.default_groups as ["payments-dev"]
	d.allow
}

test_tier_matching if {
	data.eks_mcp.gateway.cluster_tier == "prod" with input.target.cluster as "prod-eu-1"
	data.eks_mcp.gateway.cluster_tier == "prod" with input.target.cluster as "shop-prod"
	data.eks_mcp.gateway.cluster_tier == "staging" with input.target.cluster as "staging-1"
	data.eks_mcp.gateway.cluster_tier == "dev" with input.target.cluster as "dev-alice"
	data.eks_mcp.gateway.cluster_tier == "prod" with input.target.cluster as "mystery"
}

test_default_tier_from_data if {
	data.eks_mcp.gateway.cluster_tier == "dev" with input.target.cluster as "mystery" with data.gateway.default_tier as "dev"
}

test_signing_role_by_access if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "ConfigMap", "payments")
		with data.gateway.signing_roles as {"read": "read_only", "write": "privileged"}
	d.role == "read_only"
}

test_unknown_tool_is_hidden if {
	not data.eks_mcp.gateway.tool_visible with input as call(alice, object.union(tool("exec", "unknown"), {"known": false}), empty_target)
}

test_read_tools_are_visible if {
	data.eks_mcp.gateway.tool_visible with input as call(alice, tool("list_k8s_resources", "read"), empty_target)
}

test_write_only_tool_hidden_without_any_grant if {
	not data.eks_mcp.gateway.tool_visible with input as call(oncall, tool("apply_yaml", "write"), empty_target)
	data.eks_mcp.gateway.tool_visible with input as call(alice, tool("apply_yaml", "write"), empty_target)
	data.eks_mcp.gateway.tool_visible with input as call(nobody, tool("apply_yaml", "write"), empty_target)
		with data.gateway.principals as {"nobody": {"writes": [{"clusters": ["dev"], "namespaces": ["tools"]}]}}
}

test_aws_tool_visible_only_with_aws_grant if {
	not data.eks_mcp.gateway.tool_visible with input as call(alice, tool("add_inline_policy", "write"), empty_target)
	data.eks_mcp.gateway.tool_visible with input as call(admin, tool("add_inline_policy", "write"), empty_target)
}

test_nothing_visible_to_anonymous if {
	not data.eks_mcp.gateway.tool_visible with input as call(principal("", []), tool("search_eks_documentation", "read"), empty_target)
}

test_glob_match if {
	data.eks_mcp.gateway.glob_match("dev-*", "dev-a.b")
	data.eks_mcp.gateway.glob_match("payments", "payments")
	not data.eks_mcp.gateway.glob_match("payments", "payments-x")
	not data.eks_mcp.gateway.glob_match("dev-*", "prod-dev")
}

test_glob_shapes if {
	data.eks_mcp.gateway.glob_match("*", "")
	data.eks_mcp.gateway.glob_match("*-prod", "shop-prod")
	not data.eks_mcp.gateway.glob_match("*-prod", "shop-prod-1")
	data.eks_mcp.gateway.glob_match("*-prod-*", "shop-prod-1")
	data.eks_mcp.gateway.glob_match("*.dkr.ecr.*.amazonaws.com", "1.dkr.ecr.us-west-2.amazonaws.com")
	not data.eks_mcp.gateway.glob_match("*.dkr.ecr.*.amazonaws.com", "evil.com")
	data.eks_mcp.gateway.glob_match("team-?", "team-a")
	not data.eks_mcp.gateway.glob_match("team-?*", "team-")
	not data.eks_mcp.gateway.glob_match("dev-*", null)
	data.eks_mcp.gateway.glob_match("a*b", "axxb")
	not data.eks_mcp.gateway.glob_match("a*b", "axxc")
	data.eks_mcp.gateway.glob_match("dev-*", "dev-")
	not data.eks_mcp.gateway.glob_match("dev-*", "de")
}
