package eks_mcp.gateway_test

test_unknown_tool_is_denied if {
	d := data.eks_mcp.gateway.decision with input as call(alice, object.union(tool("exec_in_pod", "unknown"), {"known": false}), target("dev-1", []))
	denied_by(d, "tools.unknown")
	contains(d.reasons[0], "exec_in_pod")
}

test_tools_call_without_tool_is_denied if {
	d := data.eks_mcp.gateway.decision with input as method_input(alice, "tools/call")
	denied_by(d, "tools.missing")
}

# A document that lacks a field is denied as one holding null. Under OPA a rule negating a call
# on the absent field (`not is_object(input.tool)`) would not fire; the negated facts are rules
# or read through object.get (gateway.rego), so both engines deny (tests/it/opa.rs).
test_absent_fields_deny_like_null_ones if {
	no_tool := object.remove(method_input(alice, "tools/call"), ["tool"])
	denied_by(data.eks_mcp.gateway.decision, "tools.missing") with input as no_tool
	no_cluster := call(alice, tool("list_api_versions", "read"), object.remove(empty_target, ["cluster"]))
	denied_by(data.eks_mcp.gateway.decision, "clusters.missing") with input as no_cluster
	no_error := call(alice, tool("apply_yaml", "write"), object.remove(target("dev-1", []), ["parse_error"]))
	denied_by(data.eks_mcp.gateway.decision, "writes.nothing") with input as no_error
	nameless_write := call(alice, object.remove(tool("manage_k8s_resource", "write"), ["name"]), target("dev-1", [res("ConfigMap", "kube-system", "x")]))
	denied_by(data.eks_mcp.gateway.decision, "writes.no_grant") with input as nameless_write
	nameless_read := call(alice, object.remove(tool("read_k8s_resource", "read"), ["name"]), target("dev-1", [res("Secret", "payments", "db")]))
	denied_by(data.eks_mcp.gateway.decision, "secrets.read") with input as nameless_read
}

test_unparseable_facts_are_denied if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("apply_yaml", "write"), object.union(target("dev-1", []), {"parse_error": "argument `yaml_content` is not valid YAML"}))
	denied_by(d, "facts.unparseable")
	contains(concat(" ", d.reasons), "not valid YAML")
}

test_cluster_tool_without_cluster_is_denied if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("list_api_versions", "read"), empty_target)
	denied_by(d, "clusters.missing")
}

test_documentation_search_needs_no_cluster if {
	d := data.eks_mcp.gateway.decision with input as call(nobody, object.union(tool("search_eks_documentation", "read"), {"targets_cluster": false}), empty_target)
	d.allow
	d.rules == ["reads.allowed"]
}

test_cluster_not_on_allowlist_is_denied if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "sandbox-1", "ConfigMap", "payments")
	denied_by(d, "clusters.not_allowed")
	contains(d.reasons[0], "sandbox-1")
}

test_namespace_on_allowlist_is_readable if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "prod-eu-1", "Deployment", "payments-api")
	d.allow
}

test_namespace_off_allowlist_is_denied if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "Deployment", "kube-system")
	denied_by(d, "namespaces.not_allowed")
	contains(d.reasons[0], "namespace kube-system on cluster dev-1")
	contains(d.reasons[0], "group payments-dev")
}

test_namespace_allowlist_from_data if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "Deployment", "kube-system")
		with data.gateway.groups["payments-dev"].namespaces as ["*"]
	d.allow
}

test_all_namespaces_needs_cluster_wide_read if {
	inp := call(alice, tool("list_k8s_resources", "read"), object.union(target("dev-1", [res("Pod", null, null)]), {"all_namespaces": true}))
	d := data.eks_mcp.gateway.decision with input as inp
	denied_by(d, "namespaces.all_namespaces")
	d2 := data.eks_mcp.gateway.decision with input as object.union(inp, {"principal": oncall})
	d2.allow
}

test_cluster_scoped_listing_is_a_plain_read if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("list_k8s_resources", "read"), target("dev-1", [cluster_res("Node", null)]))
	d.allow
}

test_sensitive_read_is_allowed_with_redaction if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("get_pod_logs", "sensitive"), target("dev-1", [res("Pod", "payments", "api-1")]))
	d.allow
	d.rules == ["sensitive.redacted"]
	"baseline" in d.redact
}

test_cloudwatch_logs_need_cluster_wide_read if {
	inp := call(alice, tool("get_cloudwatch_logs", "sensitive"), object.union(target("dev-1", []), {"all_namespaces": true}))
	denied_by(data.eks_mcp.gateway.decision, "namespaces.all_namespaces") with input as inp
	data.eks_mcp.gateway.decision.allow with input as object.union(inp, {"principal": oncall})
}

test_principal_without_groups_reads_nothing_namespaced if {
	d := data.eks_mcp.gateway.decision with input as read_call(nobody, "dev-1", "ConfigMap", "default")
	denied_by(d, "clusters.not_allowed")
	contains(d.reasons[0], "principal nobody (no group)")
}

test_principal_entry_opens_clusters_and_namespaces if {
	inp := read_call(nobody, "dev-1", "ConfigMap", "tools")
	d := data.eks_mcp.gateway.decision with input as inp
		with data.gateway.principals as {"nobody": {"clusters": ["dev-*"], "namespaces": ["tools"]}}
	d.allow
	d2 := data.eks_mcp.gateway.decision with input as read_call(nobody, "dev-1", "ConfigMap", "default")
		with data.gateway.principals as {"nobody": {"clusters": ["dev-*"], "namespaces": ["tools"]}}
	denied_by(d2, "namespaces.not_allowed")
	# Another principal's entry does not apply.
	d3 := data.eks_mcp.gateway.decision with input as inp
		with data.gateway.principals as {"carol": {"clusters": ["dev-*"], "namespaces": ["tools"]}}
	denied_by(d3, "clusters.not_allowed")
}

test_principal_entry_adds_to_its_groups if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "ConfigMap", "tools")
		with data.gateway.principals as {"alice": {"clusters": ["dev-*"], "namespaces": ["tools"]}}
	d.allow
	d2 := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "ConfigMap", "payments")
		with data.gateway.principals as {"alice": {"clusters": ["dev-*"], "namespaces": ["tools"]}}
	d2.allow
}
