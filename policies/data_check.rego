# METADATA
# title: checks of the policy data
# description: |
#   `data_errors` is evaluated by the gateway once each time it loads the policy directory
#   (at start and on every hot reload), never per request. Any entry fails the load: at start
#   the gateway refuses to run, on a reload the previous policy stays in force and /readyz
#   and the policy_reload metrics say why. It catches the mistakes that would otherwise
#   silently change what is allowed: a misspelled setting, a grant missing its namespaces,
#   an operation that does not exist.
package eks_mcp.gateway

# The settings under data.gateway these policies read.
known_data_keys := {
	"methods", "default_groups", "tiers", "default_tier", "read_only_tiers",
	"break_glass_groups", "groups", "principals", "aws_write_tools", "aws_grants", "secrets",
	"images", "baseline_capabilities", "signing_roles", "limits", "namespaced_custom_kinds", "confirm",
}

# The keys of a group or principal entry, and of one of its write grants.
settings_keys := {"clusters", "namespaces", "cluster_wide_read", "writes"}

write_grant_keys := {"id", "clusters", "namespaces", "operations", "cluster_scoped"}

write_operations := {"create", "replace", "patch", "delete", "apply"}

data_errors contains msg if {
	some key, _ in data.gateway
	not key in known_data_keys
	key != "grants"
	msg := sprintf("data.gateway.%s is not a setting the policies read (known: %s); correct the name or remove it", [key, concat(", ", sort(known_data_keys))])
}

# The list of write grants of earlier versions.
data_errors contains msg if {
	_ = data.gateway.grants
	msg := "data.gateway.grants is no longer read: move each write grant under the group it names (groups.<group>.writes) or the principal (principals.<id>.writes), without its groups and principals keys"
}

data_errors contains msg if {
	some section in ["groups", "principals"]
	v := data.gateway[section]
	not is_object(v)
	msg := sprintf("data.gateway.%s must be a mapping of names to settings", [section])
}

# Group and principal entries, as (path, entry) pairs.
settings_entries contains [sprintf("%s.%s", [section, name]), entry] if {
	some section in ["groups", "principals"]
	some name, entry in object.get(data.gateway, section, {})
}

data_errors contains msg if {
	some pair in settings_entries
	[path, entry] := pair
	not is_object(entry)
	msg := sprintf("data.gateway.%s must be a mapping with some of %s", [path, concat(", ", sort(settings_keys))])
}

data_errors contains msg if {
	some pair in settings_entries
	[path, entry] := pair
	is_object(entry)
	some key, _ in entry
	not key in settings_keys
	msg := sprintf("data.gateway.%s.%s is not a setting (known: %s); correct the name or remove it", [path, key, concat(", ", sort(settings_keys))])
}

data_errors contains msg if {
	some pair in settings_entries
	[path, entry] := pair
	some key in ["clusters", "namespaces"]
	v := entry[key]
	not glob_list(v)
	msg := sprintf("data.gateway.%s.%s must be a list of name patterns", [path, key])
}

data_errors contains msg if {
	some pair in settings_entries
	[path, entry] := pair
	v := entry.cluster_wide_read
	not is_boolean(v)
	msg := sprintf("data.gateway.%s.cluster_wide_read must be true or false", [path])
}

data_errors contains msg if {
	some pair in settings_entries
	[path, entry] := pair
	v := entry.writes
	not is_array(v)
	msg := sprintf("data.gateway.%s.writes must be a list of write grants", [path])
}

# Write grants, as (path, grant) pairs.
write_grant_entries contains [sprintf("%s.writes[%d]", [path, i]), grant] if {
	some pair in settings_entries
	[path, entry] := pair
	is_object(entry)
	is_array(entry.writes)
	some i, grant in entry.writes
}

data_errors contains msg if {
	some pair in write_grant_entries
	[path, grant] := pair
	not is_object(grant)
	msg := sprintf("data.gateway.%s must be a mapping with clusters and namespaces", [path])
}

data_errors contains msg if {
	some pair in write_grant_entries
	[path, grant] := pair
	is_object(grant)
	some key, _ in grant
	not key in write_grant_keys
	msg := sprintf("data.gateway.%s.%s is not a grant setting (known: %s); correct the name or remove it", [path, key, concat(", ", sort(write_grant_keys))])
}

data_errors contains msg if {
	some pair in write_grant_entries
	[path, grant] := pair
	is_object(grant)
	some key in ["clusters", "namespaces"]
	not glob_list(object.get(grant, key, null))
	msg := sprintf("data.gateway.%s.%s must be a list of name patterns (a grant names both its clusters and its namespaces)", [path, key])
}

data_errors contains msg if {
	some pair in write_grant_entries
	[path, grant] := pair
	ops := grant.operations
	not operation_list(ops)
	msg := sprintf("data.gateway.%s.operations must be a list of %s", [path, concat(", ", sort(write_operations))])
}

data_errors contains msg if {
	some pair in write_grant_entries
	[path, grant] := pair
	v := grant.cluster_scoped
	not is_boolean(v)
	msg := sprintf("data.gateway.%s.cluster_scoped must be true or false", [path])
}

data_errors contains msg if {
	v := data.gateway.namespaced_custom_kinds
	not custom_kind_list(v)
	msg := "data.gateway.namespaced_custom_kinds must be a list of kinds, each `Kind` or `group/Kind`"
}

custom_kind_list(v) if {
	is_array(v)
	every x in v {
		is_string(x)
		regex.match(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z][A-Za-z0-9]*$`, x)
	}
}

glob_list(v) if {
	is_array(v)
	every x in v {
		is_string(x)
	}
}

operation_list(v) if {
	is_array(v)
	every x in v {
		x in write_operations
	}
}

# --- data.gateway.confirm --------------------------------------------------------------

confirm_entry_keys := {"id", "access", "tools", "operations", "tiers", "groups", "principals", "break_glass", "type_name"}

confirm_operations := write_operations | {"deploy"}

access_classes := {"read", "sensitive", "write", "unknown"}

data_errors contains "data.gateway.confirm must be a list of entries" if {
	v := data.gateway.confirm
	not is_array(v)
}

confirm_entries contains [sprintf("confirm[%d]", [i]), entry] if {
	is_array(data.gateway.confirm)
	some i, entry in data.gateway.confirm
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	not is_object(entry)
	msg := sprintf("data.gateway.%s must be a mapping with an id and some of %s", [path, concat(", ", sort(confirm_entry_keys))])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	some key, _ in entry
	not key in confirm_entry_keys
	msg := sprintf("data.gateway.%s.%s is not a confirmation setting (known: %s); correct the name or remove it", [path, key, concat(", ", sort(confirm_entry_keys))])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	not confirm_id_ok(entry)
	msg := sprintf("data.gateway.%s.id must be a name of letters, digits, '-' and '_' (it becomes the rule id confirm.<id>)", [path])
}

confirm_id_ok(entry) if {
	is_string(entry.id)
	regex.match(`^[A-Za-z0-9_-]+$`, entry.id)
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	some key in ["tools", "tiers", "groups", "principals"]
	v := entry[key]
	not glob_list(v)
	msg := sprintf("data.gateway.%s.%s must be a list of names", [path, key])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	v := entry.operations
	not every_in(v, confirm_operations)
	msg := sprintf("data.gateway.%s.operations must be a list of %s", [path, concat(", ", sort(confirm_operations))])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	v := entry.access
	not every_in(v, access_classes)
	msg := sprintf("data.gateway.%s.access must be a list of %s", [path, concat(", ", sort(access_classes))])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	some key in ["break_glass", "type_name"]
	v := entry[key]
	not is_boolean(v)
	msg := sprintf("data.gateway.%s.%s must be true or false", [path, key])
}

data_errors contains msg if {
	some pair in confirm_entries
	[path, entry] := pair
	is_object(entry)
	some t in object.get(entry, "tiers", [])
	is_string(t)
	not t in {tier.name | some tier in data.gateway.tiers}
	msg := sprintf("data.gateway.%s.tiers names %s, which is not a tier in data.gateway.tiers", [path, t])
}

every_in(v, allowed) if {
	is_array(v)
	every x in v {
		x in allowed
	}
}
