# Input builders shared by the *_test.rego files (no tests here).
package eks_mcp.gateway_test

principal(id, groups) := {"id": id, "groups": groups, "auth": "jwt", "claims": {}}

alice := principal("alice", ["payments-dev"])

webby := principal("webby", ["web-dev"])

admin := principal("ada", ["platform-admins"])

oncall := principal("sam", ["sre-oncall"])

breakglass := principal("bob", ["sre-oncall", "sre-breakglass"])

nobody := principal("nobody", [])

method_input(p, method) := {
	"principal": p,
	"client": {"name": "test", "version": "1"},
	"mcp": {"method": method, "protocol_version": "2025-11-25", "era": "session"},
	"tool": null,
	"target": empty_target,
	"gateway": {"mode": "enforce", "upstream": "https://eks-mcp.us-west-2.api.aws/mcp"},
}

empty_target := {"cluster": null, "resources": [], "namespaces": [], "all_namespaces": false, "objects": [], "parse_error": null}

# A tools/call with the given tool facts and target.
call(p, tool, target) := object.union(method_input(p, "tools/call"), {"tool": tool, "target": target})

tool(name, access) := {
	"name": name,
	"arguments": {},
	"known": true,
	"access": access,
	"operation": null,
	"privileged": false,
	"targets_cluster": true,
}

tool_op(name, access, op) := object.union(tool(name, access), {"operation": op, "privileged": true})

target(cluster, resources) := object.union(empty_target, {
	"cluster": cluster,
	"resources": resources,
	"namespaces": [ns | some r in resources; is_string(r.namespace); ns := r.namespace],
})

res(kind, ns, name) := {
	"api_version": "v1",
	"kind": kind,
	"namespace": ns,
	"name": name,
	"kind_given": kind,
	"cluster_scoped": false,
	"scope": "namespaced",
	"source": "arguments",
	"object": null,
}

cluster_res(kind, name) := object.union(res(kind, null, name), {"cluster_scoped": true, "scope": "cluster"})

# A resource backed by target.objects[i] (a manifest document).
doc_res(kind, ns, name, i) := object.union(res(kind, ns, name), {"source": sprintf("yaml_content[%d]", [i]), "object": i})

# Namespaced read of `kind` in `ns` on `cluster`.
read_call(p, cluster, kind, ns) := call(p, tool("read_k8s_resource", "read"), target(cluster, [res(kind, ns, "x")]))

# manage_k8s_resource write.
write_call(p, cluster, op, kind, ns) := call(p, tool_op("manage_k8s_resource", "write", op), target(cluster, [res(kind, ns, "x")]))

# apply_yaml of the given objects (each with its own resource fact) into `ns`.
apply_call(p, cluster, ns, objects) := call(
	p,
	object.union(tool("apply_yaml", "write"), {"privileged": true}),
	object.union(target(cluster, [doc_res(o.kind, ns, "x", i) | some i, o in objects]), {"objects": objects}),
)

denied_by(d, rule) if {
	d.allow == false
	rule in d.rules
}
