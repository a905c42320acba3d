# METADATA
# title: human confirmation
# description: |
#   Calls that are allowed only once the person at the keyboard confirms them and says why.
#   Each entry of data.gateway.confirm names the calls it covers; an allowed call matched by
#   any entry gets a `confirm` object in the decision: the message the person sees and the
#   fields asked (always a free-text reason; with `type_name: true` also the name of what
#   the call acts on, typed out). The gateway then asks through MCP elicitation before it
#   forwards anything, and denies when the person declines. A denied call is never asked
#   about: confirmation can only narrow what the other rules allow.
package eks_mcp.gateway

# The entries of data.gateway.confirm this call matches. Only writes are looked at unless an
# entry lists other access classes, so a read pays one set lookup.
confirm_matches contains e if {
	tool_call
	some e in object.get(data.gateway, "confirm", [])
	input.tool.access in object.get(e, "access", ["write"])
	confirm_tool_ok(e)
	confirm_operation_ok(e)
	confirm_tier_ok(e)
	confirm_caller_ok(e)
	confirm_break_glass_ok(e)
}

confirm_tool_ok(e) if object.get(e, "tools", null) == null

confirm_tool_ok(e) if input.tool.name in e.tools

confirm_operation_ok(e) if object.get(e, "operations", null) == null

confirm_operation_ok(e) if write_operation in e.operations

confirm_tier_ok(e) if object.get(e, "tiers", null) == null

confirm_tier_ok(e) if {
	is_string(input.target.cluster)
	cluster_tier in e.tiers
}

# No groups and no principals: every caller. Otherwise the entry must name the caller.
confirm_caller_ok(e) if {
	object.get(e, "groups", null) == null
	object.get(e, "principals", null) == null
}

confirm_caller_ok(e) if names_principal(e)

confirm_break_glass_ok(e) if object.get(e, "break_glass", null) == null

confirm_break_glass_ok(e) if {
	e.break_glass == true
	break_glass
}

confirm_break_glass_ok(e) if {
	e.break_glass == false
	not break_glass
}

# Recorded on the allowed request, so the audit record and the metrics say which entry asked.
tool_notices contains n if {
	some e in confirm_matches
	n := {"rule": sprintf("confirm.%s", [e.id]), "reason": sprintf("the person must confirm this call (data.gateway.confirm entry %s)", [e.id])}
}

# What the gateway asks, or null when nothing needs confirming (or the call is denied).
confirm := c if {
	count(confirm_matches) > 0
	count(deny) == 0
	c := {
		"message": confirm_message,
		"fields": array.concat([reason_field], confirm_name_fields),
	}
} else := null

reason_field := {
	"name": "reason",
	"title": "Reason",
	"description": "Why this change is needed (recorded in the audit trail)",
	"required": true,
}

# The typed confirmation: asked when an entry wants it and the call names what to type.
confirm_type_name if {
	some e in confirm_matches
	object.get(e, "type_name", false) == true
}

confirm_name_fields := [{
	"name": "confirm_name",
	"title": sprintf("Type %s to confirm", [confirm_subject]),
	"description": sprintf("The name of what this call acts on: %s", [confirm_subject]),
	"required": true,
	"expect": confirm_subject,
}] if {
	confirm_type_name
	is_string(confirm_subject)
} else := []

# What the person types: the one object the call names, else the cluster.
subject_names := {r.name | some r in input.target.resources; is_string(r.name)}

confirm_subject := sort(subject_names)[0] if {
	count(subject_names) == 1
} else := input.target.cluster if {
	is_string(input.target.cluster)
} else := null

confirm_message := sprintf("%s asks to run %s%s on %s. Confirm only if you intend this change, and say why.", [input.principal.id, input.tool.name, operation_suffix, confirm_what])

single_resource := input.target.resources[0] if count(input.target.resources) == 1

confirm_what := sprintf("%s %s in namespace %s of cluster %s (tier %s)", [single_resource.kind, object_name(single_resource), single_resource.namespace, cluster_name, cluster_tier]) if {
	is_string(single_resource.kind)
	is_string(single_resource.namespace)
} else := sprintf("%s %s of cluster %s (tier %s)", [single_resource.kind, object_name(single_resource), cluster_name, cluster_tier]) if {
	is_string(single_resource.kind)
} else := sprintf("%d objects of cluster %s (tier %s)", [count(input.target.resources), cluster_name, cluster_tier]) if {
	count(input.target.resources) > 1
} else := sprintf("cluster %s (tier %s)", [cluster_name, cluster_tier]) if {
	is_string(input.target.cluster)
} else := "AWS resources"
