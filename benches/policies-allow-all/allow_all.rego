# METADATA
# title: Allow everything (benchmarks only)
# description: |
#   Every request is allowed with baseline redaction and every tool is visible, so the load
#   bench can measure the relay without the shipped policies' cost:
#   LOAD_POLICY_DIR=benches/policies-allow-all cargo bench --bench load
#   Never deploy this directory.
package eks_mcp.gateway

decision := {
	"allow": true,
	"reasons": [],
	"rules": ["bench.allow_all"],
	"redact": ["baseline"],
}

tool_visible := true
