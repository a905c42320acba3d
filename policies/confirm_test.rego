package eks_mcp.gateway_test

# A manage_k8s_resource write of Deployment `name` in `ns` on `cluster`.
named_write(p, cluster, op, ns, name) := call(p, tool_op("manage_k8s_resource", "write", op), target(cluster, [res("Deployment", ns, name)]))

test_developer_write_in_staging_asks_for_a_reason if {
	d := data.eks_mcp.gateway.decision with input as named_write(alice, "staging-2", "patch", "payments", "api")
	d.allow
	"confirm.staging-developer-writes" in d.rules
	[f.name | some f in d.confirm.fields] == ["reason"]
	d.confirm.fields[0].required == true
	d.confirm.message == "alice asks to run manage_k8s_resource (operation patch) on Deployment api in namespace payments of cluster staging-2 (tier staging). Confirm only if you intend this change, and say why."
}

test_developer_write_in_dev_needs_no_confirmation if {
	d := data.eks_mcp.gateway.decision with input as named_write(alice, "dev-1", "patch", "payments", "api")
	d.allow
	d.confirm == null
	d.rules == ["writes.granted"]
}

test_admin_write_in_staging_needs_no_confirmation if {
	d := data.eks_mcp.gateway.decision with input as named_write(admin, "staging", "delete", "payments", "api")
	d.allow
	d.confirm == null
}

test_reads_in_staging_need_no_confirmation if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "staging", "Pod", "payments")
	d.allow
	d.confirm == null
}

test_denied_write_is_never_asked_about if {
	# web-dev has no write grant on staging: the deny stands, nothing is asked.
	d := data.eks_mcp.gateway.decision with input as named_write(webby, "staging", "patch", "web", "api")
	denied_by(d, "writes.no_grant")
	d.confirm == null
	not "confirm.staging-developer-writes" in d.rules
}

test_break_glass_write_in_prod_asks_to_type_the_name if {
	d := data.eks_mcp.gateway.decision with input as named_write(breakglass, "prod-eu-1", "patch", "payments", "api")
	d.allow
	"tiers.break_glass" in d.rules
	"confirm.prod-break-glass-writes" in d.rules
	[f.name | some f in d.confirm.fields] == ["reason", "confirm_name"]
	d.confirm.fields[1].expect == "api"
	d.confirm.fields[1].title == "Type api to confirm"
}

test_non_break_glass_prod_write_is_denied_not_asked if {
	d := data.eks_mcp.gateway.decision with input as named_write(alice, "prod-eu-1", "patch", "payments", "api")
	denied_by(d, "tiers.read_only")
	d.confirm == null
}

test_stack_delete_asks_to_type_the_cluster if {
	inp := call(admin, tool_op("manage_eks_stacks", "write", "delete"), target("dev-1", []))
	d := data.eks_mcp.gateway.decision with input as inp
	d.allow
	"confirm.stack-delete" in d.rules
	d.confirm.fields[1] == {
		"name": "confirm_name",
		"title": "Type dev-1 to confirm",
		"description": "The name of what this call acts on: dev-1",
		"required": true,
		"expect": "dev-1",
	}
	contains(d.confirm.message, "manage_eks_stacks (operation delete) on cluster dev-1 (tier dev)")
}

test_stack_deploy_needs_no_confirmation if {
	d := data.eks_mcp.gateway.decision with input as call(admin, tool_op("manage_eks_stacks", "write", "deploy"), target("dev-1", []))
	d.allow
	d.confirm == null
}

test_several_objects_type_the_cluster if {
	inp := call(breakglass, tool_op("manage_k8s_resource", "write", "delete"), target("prod", [res("ConfigMap", "payments", "a"), res("ConfigMap", "payments", "b")]))
	d := data.eks_mcp.gateway.decision with input as inp
	d.allow
	d.confirm.fields[1].expect == "prod"
	contains(d.confirm.message, "2 objects of cluster prod (tier prod)")
}

test_confirm_entry_by_principal_and_access if {
	d := data.eks_mcp.gateway.decision with input as read_call(alice, "dev-1", "Pod", "payments")
		with data.gateway.confirm as [{"id": "alice-reads", "access": ["read"], "principals": ["alice"]}]
	d.allow
	"confirm.alice-reads" in d.rules
	[f.name | some f in d.confirm.fields] == ["reason"]
	d2 := data.eks_mcp.gateway.decision with input as read_call(oncall, "dev-1", "Pod", "payments")
		with data.gateway.confirm as [{"id": "alice-reads", "access": ["read"], "principals": ["alice"]}]
	d2.confirm == null
}

test_break_glass_false_excludes_break_glass_callers if {
	entry := [{"id": "others", "tiers": ["prod"], "break_glass": false}]
	d := data.eks_mcp.gateway.decision with input as named_write(breakglass, "prod", "patch", "payments", "api")
		with data.gateway.confirm as entry
	d.confirm == null
}

test_non_tool_methods_never_confirm if {
	d := data.eks_mcp.gateway.decision with input as method_input(alice, "tools/list")
	d.confirm == null
}

test_confirm_data_is_checked if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.confirm as [
		{"id": "a b", "tiers": ["qa"], "operations": ["restart"], "type_name": "yes", "why": 1},
		"x",
	]
	"data.gateway.confirm[0].id must be a name of letters, digits, '-' and '_' (it becomes the rule id confirm.<id>)" in errs
	"data.gateway.confirm[0].tiers names qa, which is not a tier in data.gateway.tiers" in errs
	"data.gateway.confirm[0].operations must be a list of apply, create, delete, deploy, patch, replace" in errs
	"data.gateway.confirm[0].type_name must be true or false" in errs
	"data.gateway.confirm[0].why is not a confirmation setting (known: access, break_glass, groups, id, operations, principals, tiers, tools, type_name); correct the name or remove it" in errs
	"data.gateway.confirm[1] must be a mapping with an id and some of access, break_glass, groups, id, operations, principals, tiers, tools, type_name" in errs
}
