package eks_mcp.gateway_test

test_shipped_data_has_no_errors if {
	count(data.eks_mcp.gateway.data_errors) == 0
}

test_old_grants_list_says_where_grants_moved if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.grants as [{"groups": ["payments-dev"], "clusters": ["dev"], "namespaces": ["payments"]}]
	count(errs) == 1
	some e in errs
	contains(e, "groups.<group>.writes")
}

test_misspelled_setting_is_named if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.defualt_groups as []
	errs == {"data.gateway.defualt_groups is not a setting the policies read (known: aws_grants, aws_write_tools, baseline_capabilities, break_glass_groups, confirm, default_groups, default_tier, groups, images, limits, methods, namespaced_custom_kinds, principals, read_only_tiers, secrets, signing_roles, tiers); correct the name or remove it"}
}

test_group_entry_keys_and_types_are_checked if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.groups as {
		"a": {"clusters": "dev", "namespace": ["x"], "cluster_wide_read": "yes"},
		"b": ["dev"],
	}
	"data.gateway.groups.a.clusters must be a list of name patterns" in errs
	"data.gateway.groups.a.namespace is not a setting (known: cluster_wide_read, clusters, namespaces, writes); correct the name or remove it" in errs
	"data.gateway.groups.a.cluster_wide_read must be true or false" in errs
	"data.gateway.groups.b must be a mapping with some of cluster_wide_read, clusters, namespaces, writes" in errs
	count(errs) == 4
}

test_write_grants_are_checked if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.principals as {"ci": {"writes": [
		{"clusters": ["dev"]},
		{"clusters": ["dev"], "namespaces": ["tools"], "operations": ["apply", "update"]},
		{"clusters": ["dev"], "namespaces": ["tools"], "groups": ["x"], "cluster_scoped": "true"},
	]}}
	errs == {
		"data.gateway.principals.ci.writes[0].namespaces must be a list of name patterns (a grant names both its clusters and its namespaces)",
		"data.gateway.principals.ci.writes[1].operations must be a list of apply, create, delete, patch, replace",
		"data.gateway.principals.ci.writes[2].groups is not a grant setting (known: cluster_scoped, clusters, id, namespaces, operations); correct the name or remove it",
		"data.gateway.principals.ci.writes[2].cluster_scoped must be true or false",
	}
}

test_writes_must_be_a_list if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.groups["web-dev"].writes as {"clusters": ["dev"]}
	errs == {"data.gateway.groups.web-dev.writes must be a list of write grants"}
}

test_namespaced_custom_kinds_must_be_kinds if {
	errs := data.eks_mcp.gateway.data_errors with data.gateway.namespaced_custom_kinds as ["ok.example.com/Widget", "not a kind"]
	some e in errs
	contains(e, "namespaced_custom_kinds")
	ok := data.eks_mcp.gateway.data_errors with data.gateway.namespaced_custom_kinds as ["Widget", "a.b/Widget"]
	count(ok) == 0
}
