# METADATA
# title: Kubernetes Secrets
# description: |
#   Secrets are never read, created, replaced, patched or deleted through MCP, whatever the
#   grants say, and a `kind: Secret` (any spelling; classify canonicalises the kind) in any
#   document of any manifest, List items included, denies the whole call. Listing Secrets
#   is allowed because it returns names, but the result is redacted with the
#   `secret_values` profile (values and last-applied-configuration annotations).
package eks_mcp.gateway

secret_resources contains r if {
	tool_call
	some r in input.target.resources
	r.kind in data.gateway.secrets.kinds
}

secret_deny_rules contains d if {
	writing
	some r in secret_resources
	d := {
		"rule": "secrets.write",
		"reason": sprintf("this call would %s the %s %s in namespace %s (found in %s); Secrets are never created or changed through MCP, manage them with your secret store (for example External Secrets or the Secrets Store CSI driver)", [write_operation, r.kind, object_name(r), object_namespace(r), r.source]),
	}
}

secret_deny_rules contains d if {
	tool_call
	input.tool.access != "write"
	some r in secret_resources
	not secret_listing_tool
	not secret_metadata_tool
	d := {
		"rule": "secrets.read",
		"reason": sprintf("reading the %s %s in namespace %s is denied: Secret contents never leave the cluster through MCP; list Secrets with list_k8s_resources to see their names, or read the workload that uses it", [r.kind, object_name(r), object_namespace(r)]),
	}
}

redact_profiles contains "secret_values" if secret_listing

secret_listing if {
	tool_call
	secret_listing_tool
	count(secret_resources) > 0
}

# Rules, so that `not` means the same on every engine (see gateway.rego).
secret_listing_tool if input.tool.name in data.gateway.secrets.listing_tools

secret_metadata_tool if input.tool.name in data.gateway.secrets.metadata_tools

tool_notices contains n if {
	secret_listing
	n := {"rule": "secrets.list_redacted", "reason": "Secrets are listed by name only: values and last-applied-configuration annotations are redacted"}
}

object_namespace(r) := r.namespace if {
	is_string(r.namespace)
} else := "(all namespaces)"
