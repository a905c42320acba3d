# METADATA
# title: manifest content guard (Pod Security baseline)
# description: |
#   Objects a write would create or change (every document of an apply_yaml manifest, the
#   body of manage_k8s_resource) are checked at the Pod Security Standards "baseline" level:
#   no privileged containers, no hostPath volumes, no host namespaces (network, PID, IPC),
#   no host ports, no capabilities beyond the baseline set, and images only from the
#   registries in data.gateway.images.allowed_registries. Pod templates of every workload
#   kind are checked, with init and ephemeral containers.
#
#   Boolean fields are read the way the upstream's YAML 1.1 reader reads them: `yes`, `on`
#   and `true` in any case count as true, so a string cannot slip past a `== true` test.
package eks_mcp.gateway

# Pod specs of the objects this write touches, with where they came from.
pod_specs contains {"where": where(r), "spec": spec} if {
	kubernetes_write
	some r in input.target.resources
	is_number(r.object)
	obj := input.target.objects[r.object]
	spec := pod_spec(r.kind, obj)
	is_object(spec)
}

pod_spec("Pod", obj) := obj.spec

pod_spec(kind, obj) := obj.spec.template.spec if {
	kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
}

pod_spec("PodTemplate", obj) := obj.template.spec

pod_spec("CronJob", obj) := obj.spec.jobTemplate.spec.template.spec

containers(spec) := array.concat(
	array.concat(list_field(spec, "containers"), list_field(spec, "initContainers")),
	list_field(spec, "ephemeralContainers"),
)

list_field(obj, key) := v if {
	v := obj[key]
	is_array(v)
} else := []

truthy(v) if v == true

truthy(v) if {
	is_string(v)
	lower(v) in {"true", "yes", "y", "on"}
}

where(r) := sprintf("%s %s (%s)", [r.kind, object_name(r), r.source])

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some c in containers(spec)
	truthy(object.get(c, ["securityContext", "privileged"], false))
	d := {
		"rule": "content.privileged",
		"reason": sprintf("container %s in %s is privileged, which the Pod Security baseline forbids; remove securityContext.privileged", [object.get(c, "name", "(unnamed)"), p.where]),
	}
}

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some v in list_field(spec, "volumes")
	is_object(v)
	"hostPath" in object.keys(v)
	d := {
		"rule": "content.host_path",
		"reason": sprintf("volume %s in %s mounts a hostPath, which the Pod Security baseline forbids; use a PersistentVolumeClaim, configMap or emptyDir", [object.get(v, "name", "(unnamed)"), p.where]),
	}
}

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	truthy(object.get(spec, field, false))
	d := {
		"rule": "content.host_namespaces",
		"reason": sprintf("%s sets %s, which shares the node's namespaces and the Pod Security baseline forbids; remove it", [p.where, field]),
	}
}

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some c in containers(spec)
	some port_spec in list_field(c, "ports")
	port := object.get(port_spec, "hostPort", 0)
	port != 0
	d := {
		"rule": "content.host_ports",
		"reason": sprintf("container %s in %s uses hostPort %v, which the Pod Security baseline forbids; expose it with a Service", [object.get(c, "name", "(unnamed)"), p.where, port]),
	}
}

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some c in containers(spec)
	some cap in list_field(object.get(c, ["securityContext", "capabilities"], {}), "add")
	not capability_allowed(cap)
	d := {
		"rule": "content.capabilities",
		"reason": sprintf("container %s in %s adds capability %v beyond the Pod Security baseline set; drop it from securityContext.capabilities.add", [object.get(c, "name", "(unnamed)"), p.where, cap]),
	}
}

capability_allowed(cap) if {
	is_string(cap)
	name := trim_prefix(upper(cap), "CAP_")
	name in data.gateway.baseline_capabilities
}

content_deny_rules contains d if {
	some p in pod_specs
	spec := p.spec
	some c in containers(spec)
	image := object.get(c, "image", null)
	not image_allowed(image)
	d := {
		"rule": "content.image_registry",
		"reason": sprintf("container %s in %s uses image %v from a registry that is not allowed; use an image from %s", [object.get(c, "name", "(unnamed)"), p.where, image, concat(", ", data.gateway.images.allowed_registries)]),
	}
}

image_allowed(image) if {
	is_string(image)
	any_glob_match(data.gateway.images.allowed_registries, image_registry(image))
}

# The registry host of an image reference; Docker Hub when the first path component is
# not a host (no dot or colon, not localhost), as container runtimes resolve it.
image_registry(image) := lower(parts[0]) if {
	parts := split(image, "/")
	count(parts) > 1
	registry_host(parts[0])
} else := "docker.io"

registry_host(s) if contains(s, ".")

registry_host(s) if contains(s, ":")

registry_host(s) if s == "localhost"
