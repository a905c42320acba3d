//! The Kubernetes deployment as a platform team applies it, checked offline: the kustomize
//! packages under deploy/kubernetes render with `kubectl kustomize`, the rendered objects
//! validate against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) of 1.29 and
//! of the newest release the pinned validator ships, the configuration inside them passes
//! `eks-mcp-gateway check`, the policy ConfigMap holds policies/ byte for byte, and every
//! workload runs with the restricted Pod Security posture, its probes and ports wired to what
//! the gateway's configuration really listens on.
//!
//! The tools are pinned and installed by `scripts/setup-deploy-tools` into `<repo>/.cache`
//! (kubectl comes with the machine; `KUBECTL` names another one). A test whose tool is
//! missing fails and says to run that script.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::harness::repo_root;

const SETUP_HINT: &str =
    "run scripts/setup-deploy-tools (installs the pinned deployment tools into .cache)";

/// Every kustomization a user can apply, relative to deploy/kubernetes.
const PACKAGES: &[&str] = &[
    "overlays/shared-gateway",
    "overlays/sidecar",
    "examples/shared-gateway-client",
];

/// The oldest Kubernetes release the packages support (native sidecars are on by default
/// from 1.29).
const OLDEST_KUBERNETES: &str = "1.29";

fn cache() -> PathBuf {
    repo_root().join(".cache")
}

fn kubectl() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {SETUP_HINT}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `kubectl kustomize deploy/kubernetes/<package>`: the YAML `kubectl apply -k` would send.
fn render_text(package: &str) -> String {
    let dir = repo_root().join("deploy/kubernetes").join(package);
    run(
        Command::new(kubectl()).arg("kustomize").arg(&dir),
        &format!("kubectl kustomize {}", dir.display()),
    )
}

/// The rendered objects of a package.
fn render(package: &str) -> Vec<Value> {
    yaml_documents(&render_text(package))
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// The ConfigMap whose generated name starts with `prefix-` (kustomize appends a hash).
fn config_map<'a>(objects: &'a [Value], prefix: &str) -> &'a Value {
    let found: Vec<_> = of_kind(objects, "ConfigMap")
        .into_iter()
        .filter(|c| {
            name(c)
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
        })
        .collect();
    assert_eq!(found.len(), 1, "one ConfigMap named {prefix}-<hash>");
    found[0]
}

/// The Kubernetes release schemas the pinned kubernetes-validate ships, newest last.
fn shipped_kubernetes_releases() -> Vec<(u32, u32)> {
    let lib = cache().join("venv-k8s/lib");
    let mut releases = Vec::new();
    for python in
        std::fs::read_dir(&lib).unwrap_or_else(|e| panic!("{}: {e}; {SETUP_HINT}", lib.display()))
    {
        let schemas = python
            .unwrap()
            .path()
            .join("site-packages/kubernetes_validate/kubernetes-json-schema");
        for entry in std::fs::read_dir(&schemas).into_iter().flatten() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(v) = file
                .strip_prefix('v')
                .and_then(|f| f.strip_suffix(".0-local-strict"))
                && let Some((major, minor)) = v.split_once('.')
            {
                releases.push((major.parse().unwrap(), minor.parse().unwrap()));
            }
        }
    }
    releases.sort();
    assert!(!releases.is_empty(), "no schemas found; {SETUP_HINT}");
    releases
}

#[test]
fn every_package_renders_and_validates_strictly_for_the_oldest_and_newest_kubernetes() {
    let validate = cache().join("venv-k8s/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} missing; {SETUP_HINT}",
        validate.display()
    );
    let releases = shipped_kubernetes_releases();
    let (major, minor) = *releases.last().unwrap();
    let newest = format!("{major}.{minor}");
    assert!(
        releases.contains(&(1, 29)),
        "the validator must ship Kubernetes {OLDEST_KUBERNETES}"
    );
    let dir = tempfile::tempdir().unwrap();
    for package in PACKAGES {
        let text = render_text(package);
        let objects = yaml_documents(&text);
        assert!(
            objects.len() >= 3,
            "{package} renders {} objects",
            objects.len()
        );
        let file = dir.path().join(package.replace('/', "_") + ".yaml");
        std::fs::write(&file, &text).unwrap();
        for version in [OLDEST_KUBERNETES, newest.as_str()] {
            let out = run(
                Command::new(&validate)
                    .args(["--strict", "--kubernetes-version", version])
                    .arg(&file),
                &format!("kubernetes-validate --strict -k {version} ({package})"),
            );
            // One "passed" line per object: nothing was skipped for want of a schema.
            let passed = out.lines().filter(|l| l.contains(" passed ")).count();
            assert_eq!(
                passed,
                objects.len(),
                "{package} on {version}: every object validated\n{out}"
            );
        }
    }
}

/// The files of policies/ that the gateway reads or tests (everything but the kustomization
/// that packages them).
fn policy_files() -> BTreeMap<String, String> {
    std::fs::read_dir(repo_root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().unwrap() != "kustomization.yaml")
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_rendered_policy_config_map_is_policies_byte_for_byte() {
    let expected = policy_files();
    for package in ["overlays/shared-gateway", "overlays/sidecar"] {
        let objects = render(package);
        let cm = config_map(&objects, "eks-mcp-gateway-policies");
        assert!(cm.get("binaryData").is_none(), "{package}: text files only");
        let data: BTreeMap<String, String> =
            serde_json::from_value(cm["data"].clone()).expect("string data");
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{package}: the ConfigMap holds every file of policies/ (list a new file in \
             policies/kustomization.yaml)"
        );
        for (file, text) in &expected {
            assert!(
                data[file] == *text,
                "{package}: {file} in the ConfigMap differs from policies/{file}"
            );
        }
    }
}

/// The gateway configuration a package mounts, and the mount points of its ConfigMaps.
struct MountedGateway {
    config_text: String,
    config: Value,
    policy_files: BTreeMap<String, String>,
}

/// Materialise what the pod sees: the rendered gateway.yaml with `policy.dir` pointed at a
/// copy of the rendered policy ConfigMap.
fn mounted(objects: &[Value], config_prefix: &str) -> MountedGateway {
    let cm = config_map(objects, config_prefix);
    let config_text = cm["data"]["gateway.yaml"]
        .as_str()
        .expect("gateway.yaml in the config ConfigMap")
        .to_owned();
    let config: Value = serde_yaml::from_str(&config_text).unwrap();
    let policy_files =
        serde_json::from_value(config_map(objects, "eks-mcp-gateway-policies")["data"].clone())
            .unwrap();
    MountedGateway {
        config_text,
        config,
        policy_files,
    }
}

#[test]
fn the_rendered_configuration_passes_eks_mcp_gateway_check() {
    for (package, config_prefix) in [
        ("overlays/shared-gateway", "eks-mcp-gateway-config"),
        ("overlays/sidecar", "eks-mcp-gateway-sidecar-config"),
    ] {
        let objects = render(package);
        let gw = mounted(&objects, config_prefix);
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        for (file, text) in &gw.policy_files {
            std::fs::write(policies.join(file), text).unwrap();
        }
        let mounted_dir = gw.config["policy"]["dir"].as_str().unwrap();
        assert_eq!(mounted_dir, "/etc/eks-mcp-gateway/policies", "{package}");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            gw.config_text
                .replace(mounted_dir, &policies.display().to_string()),
        )
        .unwrap();
        let out = run(
            Command::new(env!("CARGO_BIN_EXE_eks-mcp-gateway"))
                .arg("check")
                .arg("--config")
                .arg(&config),
            &format!("eks-mcp-gateway check ({package})"),
        );
        assert!(out.starts_with("ok: "), "{package}: {out}");
        // The revision of the rendered policies is the revision of policies/.
        let shipped =
            eks_mcp_gateway::policy::PolicyEngine::load(&eks_mcp_gateway::config::PolicyConfig {
                dir: repo_root().join("policies"),
                ..Default::default()
            })
            .unwrap();
        assert!(
            out.contains(&format!("(revision {})", shipped.revision())),
            "{package}: {out}"
        );
    }
}

/// The port of a `host:port` listen address, and whether the host is loopback.
fn listen_port(addr: &str) -> (u16, bool) {
    let addr: std::net::SocketAddr = addr.parse().expect("listen address");
    (addr.port(), addr.ip().is_loopback())
}

fn duration_secs(v: &Value) -> u64 {
    let text = v.as_str().unwrap_or("0s");
    eks_mcp_gateway::config::duration_str::parse(text)
        .unwrap()
        .as_secs()
}

/// Assert the restricted Pod Security profile (and a read-only root filesystem and resource
/// requests) for every container of a pod template; `what` names it in messages.
fn assert_restricted(pod: &Value, what: &str) {
    let pod_sc = &pod["securityContext"];
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        .collect();
    assert!(!containers.is_empty(), "{what}: no containers");
    assert!(
        pod["hostNetwork"] != true && pod["hostPID"] != true && pod["hostIPC"] != true,
        "{what}: no host namespaces"
    );
    for c in containers {
        let cname = format!("{what}/{}", c["name"].as_str().unwrap());
        let sc = &c["securityContext"];
        // A container setting wins over the pod's.
        let effective = |key: &str| {
            if sc[key].is_null() {
                pod_sc[key].clone()
            } else {
                sc[key].clone()
            }
        };
        assert_eq!(effective("runAsNonRoot"), true, "{cname}: runAsNonRoot");
        let uid = effective("runAsUser");
        assert!(
            uid.as_u64().is_some_and(|u| u > 0),
            "{cname}: a numeric non-root runAsUser (the kubelet cannot check a user name \
             against runAsNonRoot): {uid}"
        );
        assert_eq!(
            effective("seccompProfile")["type"],
            "RuntimeDefault",
            "{cname}: seccomp"
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{cname}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{cname}");
        assert!(sc["privileged"] != true, "{cname}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{cname}: drop ALL"
        );
        assert!(sc["capabilities"]["add"].is_null(), "{cname}: adds none");
        let res = &c["resources"];
        for (kind, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                res[kind][key].is_string(),
                "{cname}: resources.{kind}.{key}"
            );
        }
    }
}

/// The gateway container of a pod (by image) and whether it is a native sidecar.
fn gateway_container(pod: &Value) -> (&Value, bool) {
    let is_gateway = |c: &&Value| {
        c["image"]
            .as_str()
            .is_some_and(|i| i.contains("/eks-mcp-gateway:"))
    };
    if let Some(c) = pod["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(is_gateway))
    {
        return (c, true);
    }
    let c = pod["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(is_gateway))
        .expect("a gateway container");
    (c, false)
}

/// The containerPort a probe or Service names (by name or number).
fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let wanted = port.as_str().expect("port name");
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == wanted)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {wanted}")) as u16
}

/// Volume name → ConfigMap name for a pod's configMap volumes.
fn config_map_volumes(pod: &Value) -> BTreeMap<String, String> {
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["configMap"]["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Checks shared by every gateway container: the image is this version, the config file
/// argument and the policy directory are the mounted ConfigMaps (no subPath, which the kubelet
/// never updates), probes reach the operational listener. Returns the pod's gateway config.
fn assert_gateway_wiring(objects: &[Value], pod: &Value, what: &str) -> (Value, bool) {
    let (c, sidecar) = gateway_container(pod);
    let image = c["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{what}: image {image} is pinned to this version"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..2], ["serve", "--config"], "{what}: args");
    let volumes = config_map_volumes(pod);
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m["subPath"].is_null(), "{what}: no subPath mounts");
            assert_eq!(m["readOnly"], true, "{what}: read-only mounts");
            (
                m["mountPath"].as_str().unwrap().to_owned(),
                volumes[m["name"].as_str().unwrap()].clone(),
            )
        })
        .collect();
    let config_file = Path::new(args[2]);
    let config_cm = &mounts[config_file.parent().unwrap().to_str().unwrap()];
    let rendered = of_kind(objects, "ConfigMap");
    let config_cm = rendered
        .iter()
        .find(|cm| name(cm) == config_cm)
        .unwrap_or_else(|| panic!("{what}: ConfigMap {config_cm} is rendered"));
    let file = config_file.file_name().unwrap().to_str().unwrap();
    let config: Value = serde_yaml::from_str(config_cm["data"][file].as_str().unwrap()).unwrap();
    let policy_cm = &mounts[config["policy"]["dir"].as_str().unwrap()];
    assert!(
        policy_cm.starts_with("eks-mcp-gateway-policies-")
            && rendered.iter().any(|cm| name(cm) == policy_cm),
        "{what}: policy.dir is the mounted policy ConfigMap"
    );

    // Probes go to the operational listener (metrics.listen), which is not on loopback so
    // the kubelet reaches it.
    let (ops_port, ops_loopback) = listen_port(config["metrics"]["listen"].as_str().unwrap());
    assert!(
        !ops_loopback,
        "{what}: the kubelet cannot probe a loopback listener"
    );
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{what}: {probe}");
        assert_eq!(
            resolve_port(c, &get["port"]),
            ops_port,
            "{what}: {probe} targets metrics.listen"
        );
    }
    (config, sidecar)
}

#[test]
fn shared_gateway_is_restricted_and_wired_to_its_configuration() {
    let objects = render("overlays/shared-gateway");
    let ns = of_kind(&objects, "Namespace");
    assert_eq!(
        ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let deployment = of_kind(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_restricted(pod, "shared-gateway");
    let (config, sidecar) = assert_gateway_wiring(&objects, pod, "shared-gateway");
    assert!(!sidecar);
    let (c, _) = gateway_container(pod);
    let (mcp_port, mcp_loopback) = listen_port(config["listen"].as_str().unwrap());
    assert!(!mcp_loopback, "the shared gateway listens beyond loopback");
    assert_eq!(resolve_port(c, &serde_json::json!("mcp")), mcp_port);

    // Scale and availability.
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let selects_pods = |selector: &Value| {
        let m = selector["matchLabels"].as_object().unwrap();
        !m.is_empty() && m.iter().all(|(k, v)| pod_labels[k] == *v)
    };
    assert!(selects_pods(&deployment["spec"]["selector"]));
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    let keys: BTreeSet<&str> = spread
        .iter()
        .map(|t| {
            assert!(selects_pods(&t["labelSelector"]));
            t["topologyKey"].as_str().unwrap()
        })
        .collect();
    assert!(
        keys.contains("topology.kubernetes.io/zone") && keys.contains("kubernetes.io/hostname")
    );
    let pdb = of_kind(&objects, "PodDisruptionBudget")[0];
    assert!(selects_pods(&pdb["spec"]["selector"]));
    let hpa = of_kind(&objects, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], name(deployment));
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");

    // SIGTERM: /readyz turns 503 at once, the listener serves for shutdown_delay, in-flight
    // requests get shutdown_grace, and the kubelet waits for all of it (plus the audit flush).
    let delay = duration_secs(&config["limits"]["shutdown_delay"]);
    let grace = duration_secs(&config["limits"]["shutdown_grace"]);
    assert!(delay > 0, "the shared gateway waits for endpoint removal");
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination >= delay + grace + 5,
        "terminationGracePeriodSeconds {termination} covers shutdown_delay {delay}s + \
         shutdown_grace {grace}s + 5s"
    );
    assert_eq!(
        c["readinessProbe"]["failureThreshold"], 1,
        "one 503 takes the pod out"
    );

    // The Service and the NetworkPolicy name ports the container declares.
    let service = of_kind(&objects, "Service")[0];
    assert!(selects_pods(
        &serde_json::json!({"matchLabels": service["spec"]["selector"]})
    ));
    for p in service["spec"]["ports"].as_array().unwrap() {
        resolve_port(c, &p["targetPort"]);
    }
    let netpol = of_kind(&objects, "NetworkPolicy")[0];
    assert!(selects_pods(&netpol["spec"]["podSelector"]));
    let ingress = netpol["spec"]["ingress"].as_array().unwrap();
    let ingress_ports: BTreeSet<u16> = ingress
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| resolve_port(c, &p["port"]))
        .collect();
    let (ops_port, _) = listen_port(config["metrics"]["listen"].as_str().unwrap());
    assert_eq!(ingress_ports, BTreeSet::from([mcp_port, ops_port]));
    let egress_ports: BTreeSet<u64> = netpol["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().unwrap())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 80, 443]));

    // Callers come in with projected ServiceAccount tokens for this audience.
    assert_eq!(config["auth"]["mode"], "jwt");
    assert_eq!(config["auth"]["audience"], "eks-mcp-gateway");
    assert_eq!(config["auth"]["service_account_groups"], true);
    let sa = of_kind(&objects, "ServiceAccount")[0];
    assert_eq!(pod["serviceAccountName"], name(sa));
}

#[test]
fn sidecar_is_a_native_sidecar_on_loopback_and_restricted() {
    let objects = render("overlays/sidecar");
    let deployment = of_kind(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_restricted(pod, "sidecar");
    let (config, sidecar) = assert_gateway_wiring(&objects, pod, "sidecar");
    assert!(sidecar, "the gateway is an init container");
    let (c, _) = gateway_container(pod);
    assert_eq!(
        c["restartPolicy"], "Always",
        "native sidecar: starts before the agent, stops after it"
    );
    let (port, loopback) = listen_port(config["listen"].as_str().unwrap());
    assert!(loopback, "the sidecar's MCP listener is on loopback only");
    assert!(
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["containerPort"] != port),
        "the MCP port is not exposed"
    );
    let agent = &pod["containers"][0];
    let url = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "EKS_MCP_URL")
        .unwrap();
    assert_eq!(url["value"], format!("http://127.0.0.1:{port}/mcp"));
    let grace = duration_secs(&config["limits"]["shutdown_grace"]);
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= grace + 5);
}

#[test]
fn shared_gateway_client_sends_an_audience_bound_projected_token() {
    let objects = render("examples/shared-gateway-client");
    let ns = of_kind(&objects, "Namespace")[0];
    // The label the shared gateway's NetworkPolicy admits.
    let netpol = of_kind(&render("overlays/shared-gateway"), "NetworkPolicy")[0].clone();
    let admitted = &netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"];
    for (k, v) in admitted.as_object().unwrap() {
        assert_eq!(ns["metadata"]["labels"][k], *v, "namespace label {k}");
    }
    let pod = &of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"];
    assert_restricted(pod, "client");
    let token = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| v["projected"]["sources"].as_array().into_iter().flatten())
        .find_map(|s| s.get("serviceAccountToken"))
        .expect("a projected ServiceAccount token");
    assert_eq!(token["audience"], "eks-mcp-gateway");
}

// ---------------------------------------------------------------------------------------
// Monitoring: alert rules under promtool, and a real Prometheus scraping a real gateway.

fn monitoring_dir() -> PathBuf {
    repo_root().join("deploy/monitoring")
}

fn promtool() -> PathBuf {
    let p = cache().join("prometheus/usr/bin/promtool");
    assert!(p.exists(), "{} missing; {SETUP_HINT}", p.display());
    p
}

/// The rule groups of the shipped PrometheusRule, as a plain Prometheus rules file.
fn write_rules_file(dir: &Path) -> PathBuf {
    let rule: Value = serde_yaml::from_str(
        &std::fs::read_to_string(monitoring_dir().join("prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    let file = dir.join("rules.yaml");
    let groups = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(&file, serde_yaml::to_string(&groups).unwrap()).unwrap();
    file
}

/// Every alert and recording rule of the PrometheusRule: (name, expression).
fn rule_expressions() -> Vec<(String, String)> {
    let rule: Value = serde_yaml::from_str(
        &std::fs::read_to_string(monitoring_dir().join("prometheusrule.yaml")).unwrap(),
    )
    .unwrap();
    rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (name.to_owned(), r["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every PromQL expression of the Grafana dashboard: (panel title, expression).
fn dashboard_expressions() -> Vec<(String, String)> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                t["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(metric, label) is Grafana's, not PromQL: check its metric.
            let metric = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or(q);
            out.push((format!("variable {}", v["name"]), metric.to_owned()));
        }
    }
    assert!(out.len() >= 20, "the dashboard has its panels");
    out
}

/// Metric names an expression reads (identifiers that start like the gateway's metrics),
/// without the names of recording rules defined in the PrometheusRule.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let recorded: BTreeSet<String> = rule_expressions()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.contains(':'))
        .collect();
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if word.starts_with("mcp_") && !recorded.contains(&word) {
                names.insert(word.clone());
            }
            word.clear();
        }
    }
    names
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_rules_file(dir.path());
    let out = run(
        Command::new(promtool())
            .args(["check", "rules"])
            .arg(&rules),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    std::fs::copy(
        monitoring_dir().join("tests/alerts_test.yaml"),
        dir.path().join("alerts_test.yaml"),
    )
    .unwrap();
    let out = run(
        Command::new(promtool())
            .args(["test", "rules", "alerts_test.yaml"])
            .current_dir(dir.path()),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(dir.path().join("alerts_test.yaml")).unwrap();
    for (name, _) in rule_expressions().iter().filter(|(n, _)| !n.contains(':')) {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "alert {name} has no promtool test"
        );
    }
}

#[test]
fn monitoring_package_targets_the_shared_gateway_service() {
    let dir = monitoring_dir();
    let objects = yaml_documents(&run(
        Command::new(kubectl()).arg("kustomize").arg(&dir),
        "kubectl kustomize deploy/monitoring",
    ));
    let shared = render("overlays/shared-gateway");
    let service = of_kind(&shared, "Service")[0];
    let monitor = of_kind(&objects, "ServiceMonitor")[0];
    assert_eq!(
        monitor["metadata"]["namespace"], service["metadata"]["namespace"],
        "the ServiceMonitor lives beside the Service"
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(service["metadata"]["labels"][k], *v, "selector label {k}");
    }
    let port = &monitor["spec"]["endpoints"][0]["port"];
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == *port),
        "the ServiceMonitor scrapes a named Service port"
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // A fixed name (no hash suffix), so Grafana's sidecar keeps one dashboard per update.
    let dashboard = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c) == "eks-mcp-gateway-dashboard")
        .expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["grafana-dashboard.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["uid"], "eks-mcp-gateway");
}

/// A plain HTTP GET on loopback: status and body.
async fn http_get(url: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.get(url.parse().unwrap()),
    )
    .await
    .unwrap_or_else(|_| panic!("GET {url} timed out"))
    .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Poll `check` every 200 ms until it returns Some, for at most `limit` (a deadline that only
/// matters when something is broken).
async fn eventually<T, F, Fut>(limit: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway_and_finds_every_metric_of_the_dashboard_and_alerts()
{
    use crate::harness::{Harness, Options};
    use serde_json::json;
    // A gateway with traffic of every kind the dashboard shows: an allowed call whose result
    // is redacted, a denied one, a tools/list.
    let h =
        Harness::start_with(Options::default().principal("alice@example.com", &["payments-dev"]))
            .await;
    let mut c = h.client();
    c.initialize().await;
    let logs = c
        .call_tool(
            "get_pod_logs",
            json!({"cluster_name": "dev", "namespace": "payments", "pod_name": eks_mcp_gateway::sim::CRASHLOOP_POD}),
        )
        .await;
    assert!(!logs.is_tool_error(), "{}", logs.text());
    assert!(
        logs.tool_text().contains("[REDACTED:"),
        "{}",
        logs.tool_text()
    );
    let secret = c
        .call_tool(
            "read_k8s_resource",
            json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1", "namespace": "payments", "name": "payments-db-credentials"}),
        )
        .await;
    assert!(secret.is_tool_error(), "{}", secret.text());
    c.request("tools/list", json!({})).await;

    // Prometheus with the shipped rules, scraping the gateway every second, with the target
    // labels the Prometheus Operator would add.
    let dir = tempfile::tempdir().unwrap();
    write_rules_file(dir.path());
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [rules.yaml]\n\
             scrape_configs:\n\
             - job_name: eks-mcp-gateway\n\
             \x20 static_configs:\n\
             \x20 - targets: ['{}']\n\
             \x20   labels: {{namespace: eks-mcp-gateway, pod: eks-mcp-gateway-0}}\n",
            h.addr
        ),
    )
    .unwrap();
    let port = free_loopback_port();
    let binary = cache().join("prometheus/usr/bin/prometheus");
    let _prometheus = tokio::process::Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; {SETUP_HINT}", binary.display()));
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let limit = std::time::Duration::from_secs(90);

    // The scrape succeeded and stored the gateway's metrics.
    let names: BTreeSet<String> = eventually(limit, "Prometheus to scrape the gateway", || {
        let api = api.clone();
        async move {
            let client_ok = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            .is_ok_and(|c| c.is_ok());
            if !client_ok {
                return None;
            }
            let (status, body) = http_get(&format!("{api}/label/__name__/values")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let names: BTreeSet<String> = serde_json::from_value(v["data"].clone()).ok()?;
            (status == 200 && names.contains("mcp_gateway_requests_total")).then_some(names)
        }
    })
    .await;
    let (_, targets) = http_get(&format!("{api}/targets")).await;
    let targets: Value = serde_json::from_str(&targets).unwrap();
    assert_eq!(
        targets["data"]["activeTargets"][0]["health"], "up",
        "{targets}"
    );

    let mut used = Vec::new();
    for (name, expr) in rule_expressions() {
        used.push((format!("alert/rule {name}"), expr));
    }
    used.extend(
        dashboard_expressions()
            .into_iter()
            .map(|(title, expr)| (format!("panel {title:?}"), expr)),
    );
    let mut missing = Vec::new();
    for (what, expr) in &used {
        let metrics = metric_names(expr);
        assert!(
            !metrics.is_empty() || expr.contains(':'),
            "{what}: reads no gateway metric: {expr}"
        );
        for m in metrics {
            if !names.contains(&m) {
                missing.push(format!("{what}: {m}"));
            }
        }
        // Every expression is valid PromQL for this Prometheus (Grafana's variables filled in).
        let query = expr
            .replace("$__rate_interval", "1m")
            .replace("$namespace", ".*");
        let (status, body) = http_get(&format!("{api}/query?query={}", percent(&query))).await;
        assert_eq!(status, 200, "{what}: {query}: {body}");
    }
    assert!(
        missing.is_empty(),
        "the gateway does not export metrics the dashboard or alerts use:\n{}",
        missing.join("\n")
    );

    // The rules load and evaluate without errors against the real series.
    let rules: Value = eventually(limit, "every rule to be evaluated", || {
        let api = api.clone();
        async move {
            let (_, body) = http_get(&format!("{api}/rules")).await;
            let v: Value = serde_json::from_str(&body).ok()?;
            let rules: Vec<Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = !rules.is_empty()
                && rules.iter().all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                });
            evaluated.then_some(Value::Array(rules))
        }
    })
    .await;
    assert_eq!(rules.as_array().unwrap().len(), rule_expressions().len());
    for r in rules.as_array().unwrap() {
        assert_eq!(r["health"], "ok", "rule {} evaluates: {r}", r["name"]);
    }
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// A ConfigMap update as the kubelet makes it, and readiness while the gateway drains.

/// A policy directory laid out as the kubelet mounts a ConfigMap (AtomicWriter): the files
/// of each version in a timestamped directory, `..data` pointing at the current one, and one
/// symlink per key through `..data`.
struct KubeletMount {
    dir: PathBuf,
    version: u32,
}

impl KubeletMount {
    fn new(dir: &Path, files: &BTreeMap<String, String>) -> KubeletMount {
        let mut mount = KubeletMount {
            dir: dir.to_path_buf(),
            version: 0,
        };
        let first = mount.write_version(files);
        std::os::unix::fs::symlink(&first, dir.join("..data")).unwrap();
        for key in files.keys() {
            std::os::unix::fs::symlink(format!("..data/{key}"), dir.join(key)).unwrap();
        }
        mount
    }

    fn write_version(&mut self, files: &BTreeMap<String, String>) -> String {
        self.version += 1;
        let name = format!("..2026_12_05_09_00_{:02}.{:09}", self.version, self.version);
        let versioned = self.dir.join(&name);
        std::fs::create_dir(&versioned).unwrap();
        for (key, text) in files {
            std::fs::write(versioned.join(key), text).unwrap();
        }
        name
    }

    /// The kubelet's update: write the new version's directory, point `..data_tmp` at it,
    /// rename it over `..data` (one atomic step), then remove the old version.
    fn update(&mut self, files: &BTreeMap<String, String>) {
        let old = std::fs::read_link(self.dir.join("..data")).unwrap();
        let new = self.write_version(files);
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
    }
}

/// `/readyz` of a gateway served by the harness (its operational routes are on the MCP port).
async fn readyz(addr: std::net::SocketAddr) -> (u16, Value) {
    let (status, body) = http_get(&format!("http://{addr}/readyz")).await;
    (
        status,
        serde_json::from_str(&body).expect("/readyz is JSON"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_configmap_swap_reloads_the_policy_and_a_broken_one_keeps_the_old() {
    use crate::harness::{Harness, Options};
    use serde_json::json;
    let mount_dir = tempfile::tempdir().unwrap();
    let shipped = policy_files();
    let mut mount = KubeletMount::new(mount_dir.path(), &shipped);
    let h = Harness::start_with(
        Options {
            policy_dir: mount_dir.path().to_path_buf(),
            ..Options::default()
        }
        .principal("reader@example.com", &["readers"])
        .tweak(|cfg| cfg.policy.hot_reload = true),
    )
    .await;
    let mut c = h.client();
    c.initialize().await;
    let prod_read = json!({"cluster_name": "prod", "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let forwarded = || h.sim.tool_calls().len();

    // The shipped data: readers do not read prod.
    let (_, before) = readyz(h.addr).await;
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    let first_revision = before["policy_revision"].as_str().unwrap().to_owned();
    let r = c.call_tool("list_k8s_resources", prod_read.clone()).await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 0);

    // A ConfigMap edit that lets readers into prod, published the way the kubelet does.
    let mut granted = shipped.clone();
    let data = granted.get_mut("data.yaml").unwrap();
    let old = "    readers:\n      clusters: [dev, \"dev-*\", staging, \"staging-*\"]";
    assert!(
        data.contains(old),
        "policies/data.yaml still has the readers group"
    );
    *data = data.replace(
        old,
        "    readers:\n      clusters: [dev, \"dev-*\", staging, \"staging-*\", prod]",
    );
    mount.update(&granted);
    let second_revision = eventually(
        std::time::Duration::from_secs(60),
        "the gateway to reload the swapped ConfigMap",
        || async {
            let (_, r) = readyz(h.addr).await;
            let rev = r["policy_revision"].as_str().unwrap().to_owned();
            (rev != first_revision).then_some(rev)
        },
    )
    .await;
    let r = c.call_tool("list_k8s_resources", prod_read.clone()).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 1, "the new policy allows the read");

    // A broken edit: the old version's files are gone, the new policy keeps serving, and
    // /readyz and the metrics say why.
    let mut broken = granted.clone();
    broken.insert(
        "writes.rego".into(),
        "package eks_mcp.gateway\n\nthis is not rego {\n".into(),
    );
    mount.update(&broken);
    let detail = eventually(
        std::time::Duration::from_secs(60),
        "/readyz to report the broken policy",
        || async {
            let (_, r) = readyz(h.addr).await;
            let detail = r["checks"]["policy"]["detail"].as_str().unwrap().to_owned();
            detail.contains("failed to load").then_some(detail)
        },
    )
    .await;
    assert!(
        detail.contains("writes.rego"),
        "names the broken file: {detail}"
    );
    let (_, r) = readyz(h.addr).await;
    assert_eq!(
        r["policy_revision"],
        second_revision.as_str(),
        "the good policy stays"
    );
    assert_eq!(
        r["checks"]["policy"]["ok"], true,
        "the replica still serves safely"
    );
    assert!(eks_mcp_gateway::metrics::render().contains("mcp_gateway_policy_reload_failing 1"));
    let r = c.call_tool("list_k8s_resources", prod_read.clone()).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 2, "decided by the policy in force");

    // Fixing the ConfigMap clears the error.
    mount.update(&granted);
    eventually(
        std::time::Duration::from_secs(60),
        "the error to clear",
        || async {
            let (_, r) = readyz(h.addr).await;
            (!r["checks"]["policy"]["detail"]
                .as_str()
                .unwrap()
                .contains("failed"))
            .then_some(())
        },
    )
    .await;
    assert!(eks_mcp_gateway::metrics::render().contains("mcp_gateway_policy_reload_failing 0"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_false_when_draining_starts_while_requests_are_still_served() {
    use crate::harness::{Harness, McpClient};
    let h = Harness::start_with(crate::harness::Options::default().tweak(|cfg| {
        // Long enough that the test never races it: the test ends before the delay does.
        cfg.limits.shutdown_delay = std::time::Duration::from_secs(600);
    }))
    .await;
    let mcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mcp_addr, ops_addr) = (mcp.local_addr().unwrap(), ops.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(eks_mcp_gateway::front::serve_gateway(
        h.gateway.clone(),
        mcp,
        Some(ops),
        async {
            let _ = stopped.await;
        },
    ));
    let (_, before) = readyz(ops_addr).await;
    assert!(before["checks"].get("shutdown").is_none(), "{before}");
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        before["policy_revision"],
        h.gateway.policy.current().revision()
    );

    stop.send(()).unwrap(); // SIGTERM
    let after = eventually(
        std::time::Duration::from_secs(30),
        "/readyz to answer 503",
        || async {
            let (status, r) = readyz(ops_addr).await;
            (status == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(after["ready"], false);
    assert_eq!(after["checks"]["shutdown"]["ok"], false, "{after}");
    // Within limits.shutdown_delay the MCP listener still takes new requests.
    let mut c = McpClient::new(&format!("http://{mcp_addr}/mcp"));
    let r = c.initialize().await;
    assert_eq!(r.status, 200, "{}", r.text());
    task.abort();
    h.stop().await;
}

// ---------------------------------------------------------------------------------------
// In-cluster identity: projected ServiceAccount tokens, as the kubelet mounts them.

/// Claims exactly as the Kubernetes API server puts them in a projected, audience-bound
/// ServiceAccount token (TokenRequest API, 1.29+: with `jti` and the node).
fn projected_token_claims(issuer: &str, namespace: &str, account: &str) -> Value {
    let now = crate::identity::now();
    serde_json::json!({
        "aud": ["eks-mcp-gateway"],
        "exp": now + 3600,
        "iat": now,
        "iss": issuer,
        "jti": "0d6a5e02-5f4b-4c57-9a43-5c3a6e0b9b1e",
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "ip-10-0-12-34.us-west-2.compute.internal", "uid": "5c0f5f0e-0b59-4c35-9d7e-3e0b27f3b7a1"},
            "pod": {"name": format!("{account}-7d9c5b6f4-x2v8k"), "uid": "8f3c6a7e-2f51-4a0b-8d2c-6b1f0e9a4c3d"},
            "serviceaccount": {"name": account, "uid": "b2f1e3d4-6a7c-4e8f-9a0b-1c2d3e4f5a6b"}
        },
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{account}"),
    })
}

/// A stateless-era tools/call sent with `Authorization: Bearer <token>`.
async fn call_with_token(
    c: &crate::harness::McpClient,
    token: &str,
    tool: &str,
    args: Value,
) -> crate::harness::Reply {
    use crate::harness::STATELESS;
    let body = serde_json::json!({"jsonrpc": "2.0", "id": c.next_id(), "method": "tools/call",
        "params": {"name": tool, "arguments": args, "_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS}}});
    let bearer = format!("Bearer {token}");
    c.post_raw(
        serde_json::to_vec(&body).unwrap(),
        &[
            ("authorization", bearer.as_str()),
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_service_account_tokens_are_principals_with_namespace_groups() {
    use crate::harness::{Harness, McpClient, Options};
    use crate::identity::{Issuer, RsaKey};
    use serde_json::json;
    // The cluster's OIDC issuer: one RS256 key with a kid, as EKS publishes.
    let key = RsaKey::new("2f5d8c1a9e4b7f3c6a0d2e8b5c1f9a7d3e6b0c4a");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    // Kubernetes tokens carry no `typ`; header {alg, kid} as the API server writes it.
    let token = |claims: &Value| {
        key.sign(
            &json!({"alg": "RS256", "kid": "2f5d8c1a9e4b7f3c6a0d2e8b5c1f9a7d3e6b0c4a"}),
            claims,
        )
    };

    // Policy data that grants by namespace (group) and by service account (principal).
    let policies = tempfile::tempdir().unwrap();
    for (file, text) in policy_files() {
        let text = if file == "data.yaml" {
            assert!(text.contains("\n  groups:\n") && text.contains("\n  principals: {}\n"));
            text.replacen(
                "\n  groups:\n",
                "\n  groups:\n    \"system:serviceaccounts:agents\":\n      clusters: [dev]\n      namespaces: [\"*\"]\n",
                1,
            )
            .replacen(
                "\n  principals: {}\n",
                "\n  principals:\n    \"system:serviceaccount:agents:deployer\":\n      writes:\n        - {clusters: [dev], namespaces: [payments]}\n",
                1,
            )
        } else {
            text
        };
        std::fs::write(policies.path().join(file), text).unwrap();
    }
    let issuer_url = issuer.url.clone();
    let h = Harness::start_with(Options {
        policy_dir: policies.path().to_path_buf(),
        ..Options::default().tweak(move |cfg| {
            cfg.auth = serde_yaml::from_str(&format!(
                "mode: jwt\nissuer: {issuer_url}\naudience: eks-mcp-gateway\nservice_account_groups: true\n"
            ))
            .unwrap();
        })
    })
    .await;
    let c = McpClient::new(&h.url());
    let read = |cluster: &str| json!({"cluster_name": cluster, "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let write = json!({"operation": "patch", "cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1", "name": "payments-api", "namespace": "payments", "body": {"spec": {"replicas": 3}}});
    let forwarded = || h.sim.tool_calls().len();

    // triage-agent in agents: reads dev through its namespace group, not prod, no writes.
    let triage = token(&projected_token_claims(
        &issuer.url,
        "agents",
        "triage-agent",
    ));
    let r = call_with_token(&c, &triage, "list_k8s_resources", read("dev")).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let r = call_with_token(&c, &triage, "list_k8s_resources", read("prod")).await;
    assert!(r.is_tool_error(), "{}", r.text());
    let r = call_with_token(&c, &triage, "manage_k8s_resource", write.clone()).await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 1);

    // deployer in agents: the write its own grant names.
    let deployer = token(&projected_token_claims(&issuer.url, "agents", "deployer"));
    let r = call_with_token(&c, &deployer, "manage_k8s_resource", write.clone()).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 2);

    // A service account of another namespace is authenticated but granted nothing.
    let etl = token(&projected_token_claims(&issuer.url, "batch", "etl"));
    let r = call_with_token(&c, &etl, "list_k8s_resources", read("dev")).await;
    assert!(r.is_tool_error(), "{}", r.text());
    assert_eq!(forwarded(), 2);

    // The audit trail names the service account and the groups from kubernetes.io.
    let records = h.audit_records(5).await;
    let rec = records
        .iter()
        .find(|r| r["principal"]["id"] == "system:serviceaccount:agents:deployer")
        .expect("an audit record for the deployer");
    assert_eq!(
        rec["principal"]["groups"],
        json!(["system:serviceaccounts", "system:serviceaccounts:agents"])
    );

    // Refused outright (401): a token for another audience (the default API-server one),
    // and a token whose subject is not the account its kubernetes.io claim names.
    let mut other_audience = projected_token_claims(&issuer.url, "agents", "triage-agent");
    other_audience["aud"] = json!(["https://kubernetes.default.svc"]);
    let mut forged = projected_token_claims(&issuer.url, "agents", "triage-agent");
    forged["sub"] = json!("system:serviceaccount:kube-system:admin");
    for (what, claims) in [("audience", other_audience), ("subject", forged)] {
        let r = call_with_token(&c, &token(&claims), "list_k8s_resources", read("dev")).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    assert_eq!(forwarded(), 2);
    h.stop().await;
}

// --- The image (deploy/Dockerfile) ------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined and comments dropped, split into
/// stages at each `FROM`: `(instruction, arguments)` per line.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for l in joined {
        let (instruction, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push((instruction, args.trim().to_owned()));
    }
    stages
}

#[test]
fn the_image_is_labelled_with_the_crate_version_and_runs_as_the_nonroot_user() {
    let path = repo_root().join("deploy/Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap();
    let stages = dockerfile_stages(&text);
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let runtime = stages.last().unwrap();
    let all = |name: &str| -> Vec<&str> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert_eq!(
        all("FROM"),
        ["gcr.io/distroless/cc-debian12:nonroot"],
        "runtime base"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        all("ARG"),
        [format!("VERSION={version}")],
        "the default VERSION is the crate version"
    );
    let labels = all("LABEL").join(" ");
    assert!(
        labels.contains(r#"org.opencontainers.image.version="${VERSION}""#),
        "the OCI version label is the VERSION argument: {labels}"
    );
    // The last USER wins; it must be numeric (runAsNonRoot can only check a number) and the
    // distroless nonroot user the overlays' securityContext names.
    assert_eq!(all("USER").last(), Some(&"65532:65532"), "runtime user");
    assert!(
        text.contains(&format!("-t eks-mcp-gateway:{version} .")),
        "the build command in the Dockerfile's header tags this version"
    );
    // scripts/image-size measures the binary this build stage makes: same command.
    let build = stages[0]
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.clone())
        .expect("the build stage runs cargo build");
    let cargo = build.split("&&").next().unwrap().trim();
    let cargo = cargo.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        build.contains("strip target/release/eks-mcp-gateway"),
        "{build}"
    );
    let script = std::fs::read_to_string(repo_root().join("scripts/image-size")).unwrap();
    assert!(
        script.contains(&cargo) && script.contains("strip"),
        "scripts/image-size builds the binary as deploy/Dockerfile does ({cargo}, then strip)"
    );
}
