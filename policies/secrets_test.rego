package eks_mcp.gateway_test

test_secret_read_is_denied if {
	d := data.eks_mcp.gateway.decision with input as call(oncall, tool("read_k8s_resource", "sensitive"), target("dev-1", [res("Secret", "payments", "db")]))
	denied_by(d, "secrets.read")
	contains(d.reasons[0], "Secret db in namespace payments")
}

test_secret_read_through_manage_is_denied if {
	d := data.eks_mcp.gateway.decision with input as call(admin, tool_op("manage_k8s_resource", "sensitive", "read"), target("dev-1", [res("Secret", "payments", "db")]))
	denied_by(d, "secrets.read")
}

test_secret_writes_are_denied_even_with_grants if {
	every op in ["create", "replace", "patch", "delete"] {
		d := data.eks_mcp.gateway.decision with input as write_call(admin, "dev-1", op, "Secret", "payments")
		denied_by(d, "secrets.write")
	}
}

test_secret_in_any_manifest_document_is_denied if {
	objs := [
		{"kind": "ConfigMap", "metadata": {"name": "a"}},
		{"kind": "ConfigMap", "metadata": {"name": "b"}},
		{"kind": "Secret", "metadata": {"name": "c"}},
	]
	d := data.eks_mcp.gateway.decision with input as apply_call(alice, "dev-1", "payments", objs)
	denied_by(d, "secrets.write")
	contains(d.reasons[0], "yaml_content[2]")
}

test_listing_secrets_is_allowed_with_value_redaction if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("list_k8s_resources", "read"), target("dev-1", [res("Secret", "payments", null)]))
	d.allow
	d.redact == ["baseline", "secret_values"]
	"secrets.list_redacted" in d.rules
}

test_listing_other_kinds_has_baseline_only if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("list_k8s_resources", "read"), target("dev-1", [res("ConfigMap", "payments", null)]))
	d.redact == ["baseline"]
}

test_events_about_a_secret_are_allowed if {
	d := data.eks_mcp.gateway.decision with input as call(alice, tool("get_k8s_events", "sensitive"), target("dev-1", [res("Secret", "payments", "db")]))
	d.allow
}

test_secret_kinds_come_from_data if {
	d := data.eks_mcp.gateway.decision with input as write_call(admin, "dev-1", "create", "SealedSecret", "payments")
		with data.gateway.secrets.kinds as ["Secret", "SealedSecret"]
	denied_by(d, "secrets.write")
}
