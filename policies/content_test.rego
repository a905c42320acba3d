package eks_mcp.gateway_test

deployment(pod_spec) := {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"template": {"spec": pod_spec}}}

ok_container := {"name": "app", "image": "public.ecr.aws/nginx/nginx:1.27"}

apply_one(obj) := d if {
	d := data.eks_mcp.gateway.decision with input as apply_call(alice, "dev-1", "payments", [obj])
}

test_clean_deployment_is_allowed if {
	d := apply_one(deployment({"containers": [ok_container]}))
	d.allow
}

test_privileged_container_is_denied if {
	c := object.union(ok_container, {"securityContext": {"privileged": true}})
	denied_by(apply_one(deployment({"containers": [c]})), "content.privileged")
}

test_privileged_as_yaml11_string_is_denied if {
	c := object.union(ok_container, {"securityContext": {"privileged": "Yes"}})
	denied_by(apply_one(deployment({"containers": [c]})), "content.privileged")
}

test_privileged_init_and_ephemeral_containers_are_denied if {
	c := object.union(ok_container, {"securityContext": {"privileged": true}})
	denied_by(apply_one(deployment({"containers": [ok_container], "initContainers": [c]})), "content.privileged")
	denied_by(apply_one(deployment({"containers": [ok_container], "ephemeralContainers": [c]})), "content.privileged")
}

test_host_path_is_denied if {
	spec := {"containers": [ok_container], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}
	denied_by(apply_one(deployment(spec)), "content.host_path")
}

test_host_namespaces_are_denied if {
	every field in ["hostNetwork", "hostPID", "hostIPC"] {
		spec := object.union({"containers": [ok_container]}, {field: true})
		denied_by(apply_one(deployment(spec)), "content.host_namespaces")
	}
}

test_host_port_is_denied if {
	c := object.union(ok_container, {"ports": [{"containerPort": 80, "hostPort": 80}]})
	denied_by(apply_one(deployment({"containers": [c]})), "content.host_ports")
}

test_capabilities_beyond_baseline_are_denied if {
	c := object.union(ok_container, {"securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}}})
	d := apply_one(deployment({"containers": [c]}))
	denied_by(d, "content.capabilities")
	count(d.reasons) == 1
	contains(d.reasons[0], "SYS_ADMIN")
}

test_baseline_capabilities_any_spelling_are_allowed if {
	c := object.union(ok_container, {"securityContext": {"capabilities": {"add": ["cap_chown", "KILL"]}}})
	apply_one(deployment({"containers": [c]})).allow
}

test_image_registry_allowlist if {
	bad := object.union(ok_container, {"image": "evil.example.com/miner:latest"})
	denied_by(apply_one(deployment({"containers": [bad]})), "content.image_registry")
	hub := object.union(ok_container, {"image": "nginx:1.27"})
	denied_by(apply_one(deployment({"containers": [hub]})), "content.image_registry")
	ecr := object.union(ok_container, {"image": "123456789012.dkr.ecr.us-west-2.amazonaws.com/app@sha256:abc"})
	apply_one(deployment({"containers": [ecr]})).allow
}

test_docker_hub_allowed_from_data if {
	hub := object.union(ok_container, {"image": "library/nginx"})
	d := apply_one(deployment({"containers": [hub]})) with data.gateway.images.allowed_registries as ["docker.io"]
	d.allow
}

test_image_registry_parsing if {
	data.eks_mcp.gateway.image_registry("nginx") == "docker.io"
	data.eks_mcp.gateway.image_registry("nginx:1.2") == "docker.io"
	data.eks_mcp.gateway.image_registry("bitnami/redis") == "docker.io"
	data.eks_mcp.gateway.image_registry("localhost:5000/x") == "localhost:5000"
	data.eks_mcp.gateway.image_registry("GHCR.io/org/x") == "ghcr.io"
}

test_missing_image_is_denied if {
	denied_by(apply_one(deployment({"containers": [{"name": "x"}]})), "content.image_registry")
}

test_every_workload_kind_is_checked if {
	bad := {"containers": [object.union(ok_container, {"securityContext": {"privileged": true}})]}
	tmpl := {"template": {"spec": bad}}
	objs := [
		{"kind": "Pod", "spec": bad},
		{"kind": "StatefulSet", "spec": tmpl},
		{"kind": "DaemonSet", "spec": tmpl},
		{"kind": "ReplicaSet", "spec": tmpl},
		{"kind": "Job", "spec": tmpl},
		{"kind": "CronJob", "spec": {"jobTemplate": {"spec": tmpl}}},
		{"kind": "PodTemplate", "template": {"spec": bad}},
	]
	every o in objs {
		denied_by(apply_one(o), "content.privileged")
	}
}

test_manage_body_is_checked if {
	body := deployment({"containers": [object.union(ok_container, {"securityContext": {"privileged": true}})]})
	inp := write_call(alice, "dev-1", "create", "Deployment", "payments")
	r := object.union(inp.target.resources[0], {"object": 0})
	d := data.eks_mcp.gateway.decision with input as object.union(inp, {"target": object.union(inp.target, {"resources": [r], "objects": [body]})})
	denied_by(d, "content.privileged")
}

test_reads_are_not_content_checked if {
	bad := deployment({"containers": [object.union(ok_container, {"securityContext": {"privileged": true}})]})
	inp := read_call(alice, "dev-1", "Deployment", "payments")
	r := object.union(inp.target.resources[0], {"object": 0})
	d := data.eks_mcp.gateway.decision with input as object.union(inp, {"target": object.union(inp.target, {"resources": [r], "objects": [bad]})})
	d.allow
}
