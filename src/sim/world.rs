//! The simulated AWS account: EKS clusters with their Kubernetes objects, pod logs, IAM roles,
//! CloudFormation stacks and the documentation corpora the search tools answer from.
//!
//! The data lives in `world.yaml` and `cluster-objects.yaml` beside this file; this module
//! loads it and implements the small part of Kubernetes API semantics the tools need (create,
//! replace, merge-patch, delete, namespaces, Secret `stringData`, API error texts). It knows
//! nothing about MCP or HTTP. Deterministic apart from creation timestamps of new objects.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Credentials planted in the sample world, so tests can check that the gateway redacts them.
///
/// They appear in the crash-looping `payments-worker-…` pod's logs on every cluster, in
/// Secrets (base64 in `data` and again in the `last-applied-configuration` annotation), in
/// pod/deployment env vars (`DB_PASSWORD`, `DATABASE_URL`) and in CloudWatch log entries.
/// None of them is a real credential.
pub mod planted {
    /// AWS access key id (AWS's documented example key).
    pub const AWS_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    /// AWS secret access key (AWS's documented example secret).
    pub const AWS_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    /// Value of a `password=` line in the worker's logs.
    pub const PASSWORD: &str = "Tr0ub4dor-3-ledger";
    /// A bearer JWT in the worker's logs (`Authorization: Bearer …`).
    pub const JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InBheW1lbnRzLTIwMjYifQ.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5pbnRlcm5hbCIsInN1YiI6InN2Yy1wYXltZW50cy13b3JrZXIiLCJhdWQiOiJwYXltZW50cy1hcGkiLCJleHAiOjE4OTM0NTYwMDB9.c2ltdWxhdGVkLXNpZ25hdHVyZS1ub3QtYS1yZWFsLWtleS0wMTIzNDU2Nzg5YWJjZGVm";
    /// The database password (Secret `payments-db-credentials`, env `DB_PASSWORD`, the URL).
    pub const DB_PASSWORD: &str = "Pg-S3cret-4242";
    /// A postgres connection string with the password inline.
    pub const POSTGRES_URL: &str = "postgresql://payments_app:Pg-S3cret-4242@payments-db.cluster-c9xk2.us-west-2.rds.amazonaws.com:5432/payments";
    /// Every planted value, for "none of these may appear" assertions.
    pub const ALL: &[&str] = &[
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        PASSWORD,
        JWT,
        DB_PASSWORD,
        POSTGRES_URL,
    ];
}

/// Name of the crash-looping pod in namespace `payments` on every cluster.
pub const CRASHLOOP_POD: &str = "payments-worker-5b7c9d8f6-kq4zt";
/// Parameter values of the staging CloudFormation stack (`manage_eks_stacks describe`).
pub const STACK_DB_PASSWORD: &str = "Cfn-Staging-Db-Pw-5521";
pub const STACK_GITHUB_TOKEN: &str = "ghp_StackParamLeakTest0123456789abcdEFgh";

/// Name of the pod in namespace `monitoring` whose logs are generated on demand.
pub const BULK_LOGGER_POD: &str = "bulk-logger";

const WORLD_YAML: &str = include_str!("world.yaml");
const CLUSTER_OBJECTS_YAML: &str = include_str!("cluster-objects.yaml");
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Deserialize)]
struct WorldFile {
    account: String,
    region: String,
    clusters: Vec<ClusterSpec>,
    addons: Vec<AddonSpec>,
    insights: Vec<Value>,
    iam_roles: Vec<IamRoleSpec>,
    api_resources: Vec<ApiResource>,
    pod_logs: BTreeMap<String, BTreeMap<String, ContainerLogs>>,
    documentation: Vec<DocEntry>,
    troubleshooting: Vec<GuideEntry>,
    metrics_guidance: BTreeMap<String, Vec<Value>>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct ClusterSpec {
    pub name: String,
    pub octet: String,
    pub tier: String,
    pub version: String,
    pub platform_version: String,
    pub created_at: String,
    pub endpoint_public_access: bool,
    pub vpc: VpcSpec,
    pub nodegroup: NodegroupSpec,
}

#[derive(Deserialize, Clone)]
pub(crate) struct VpcSpec {
    pub vpc_id: String,
    pub cidr: String,
}

#[derive(Deserialize, Clone)]
pub(crate) struct NodegroupSpec {
    pub instance_type: String,
    pub desired: u32,
    pub min: u32,
    pub max: u32,
}

#[derive(Deserialize, Clone)]
pub(crate) struct AddonSpec {
    pub name: String,
    pub version: String,
}

#[derive(Deserialize, Clone)]
pub(crate) struct IamRoleSpec {
    pub name: String,
    pub description: String,
    pub trust_service: String,
    pub managed: Vec<String>,
    #[serde(default)]
    pub inline: BTreeMap<String, Value>,
}

/// One Kubernetes resource type the simulated API servers serve.
#[derive(Deserialize, Clone, Debug)]
pub(crate) struct ApiResource {
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ApiResource {
    /// `deployments.apps`, `pods`: how the API server names the resource in errors.
    fn qualified_plural(&self) -> String {
        match self.api_version.split_once('/') {
            Some((group, _)) => format!("{}.{group}", self.plural),
            None => self.plural.clone(),
        }
    }
}

#[derive(Deserialize, Clone)]
struct ContainerLogs {
    current: Option<Vec<String>>,
    previous: Option<Vec<String>>,
    generate: Option<GeneratedLogs>,
}

#[derive(Deserialize, Clone, Copy)]
struct GeneratedLogs {
    lines: usize,
}

#[derive(Deserialize, Clone)]
pub(crate) struct DocEntry {
    pub title: String,
    pub url: String,
    pub text: String,
}

#[derive(Deserialize, Clone)]
pub(crate) struct GuideEntry {
    pub title: String,
    pub text: String,
}

/// Kubernetes object key: canonical kind, namespace (empty when cluster-scoped), name.
type ObjKey = (String, String, String);

pub(crate) struct Cluster {
    pub spec: ClusterSpec,
    pub insights: Vec<Value>,
    objects: BTreeMap<ObjKey, Value>,
    logs: BTreeMap<String, BTreeMap<String, ContainerLogs>>,
}

/// An IAM role as `get_policies_for_role` and `add_inline_policy` see it.
pub(crate) struct IamRole {
    pub spec: IamRoleSpec,
    pub inline: BTreeMap<String, Value>,
}

/// The whole simulated account. Shared by every session and both protocol eras.
pub struct World {
    pub(crate) account: String,
    pub(crate) region: String,
    clusters: BTreeMap<String, Cluster>,
    pub(crate) addons: Vec<AddonSpec>,
    pub(crate) api_resources: Vec<ApiResource>,
    pub(crate) roles: BTreeMap<String, IamRole>,
    pub(crate) documentation: Vec<DocEntry>,
    pub(crate) troubleshooting: Vec<GuideEntry>,
    pub(crate) metrics_guidance: BTreeMap<String, Vec<Value>>,
    /// CloudFormation stacks deployed through `manage_eks_stacks`, by cluster name.
    pub(crate) stacks: BTreeMap<String, Value>,
    next_uid: u64,
    next_resource_version: u64,
}

/// An error as the Kubernetes API server reports it (status code, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct K8sError {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl K8sError {
    pub(crate) fn not_found(message: String) -> Self {
        Self {
            status: 404,
            reason: "Not Found",
            message,
        }
    }
    pub(crate) fn bad_request(message: String) -> Self {
        Self {
            status: 400,
            reason: "Bad Request",
            message,
        }
    }
    pub(crate) fn conflict(message: String) -> Self {
        Self {
            status: 409,
            reason: "Conflict",
            message,
        }
    }
    pub(crate) fn invalid(message: String) -> Self {
        Self {
            status: 422,
            reason: "Unprocessable Entity",
            message,
        }
    }
}

impl fmt::Display for K8sError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({}) Reason: {}: {}",
            self.status, self.reason, self.message
        )
    }
}

/// Unknown cluster, worded like the EKS DescribeCluster error the real server relays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownCluster(pub String);

impl fmt::Display for UnknownCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "An error occurred (ResourceNotFoundException) when calling the DescribeCluster operation: No cluster found for name: {}.",
            self.0
        )
    }
}

/// Container logs resolved for one request.
pub(crate) enum LogSource {
    Lines(Vec<String>),
    /// `total` numbered lines, produced on demand so large tails stay cheap to ask for.
    Generated {
        total: usize,
        pod: String,
        cluster: String,
    },
}

impl LogSource {
    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        match self {
            LogSource::Lines(lines) => lines[lines.len().saturating_sub(n)..].to_vec(),
            LogSource::Generated {
                total,
                pod,
                cluster,
            } => {
                let start = total.saturating_sub(n);
                (start..*total)
                    .map(|i| generated_line(cluster, pod, i))
                    .collect()
            }
        }
    }
}

/// Line `i` of a generated log: deterministic, about 110 bytes, millisecond timestamps.
fn generated_line(cluster: &str, pod: &str, i: usize) -> String {
    let ms = i as u64 * 37;
    let (h, m, s, frac) = (
        6 + ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000,
    );
    format!(
        "2026-11-25T{h:02}:{m:02}:{s:02}.{frac:03}Z INFO {pod} seq={i:06} cluster={cluster} batch={} records={} latency_ms={}",
        i / 100,
        (i * 7919) % 500,
        (i * 104_729) % 250
    )
}

fn substitute(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

fn substitute_value(value: &mut Value, vars: &[(&str, &str)]) {
    match value {
        Value::String(s) if s.contains("${") => *s = substitute(s, vars),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute_value(v, vars)),
        Value::Object(map) => map.values_mut().for_each(|v| substitute_value(v, vars)),
        _ => {}
    }
}

fn planted_vars() -> [(&'static str, &'static str); 6] {
    [
        ("PLANTED_AWS_ACCESS_KEY_ID", planted::AWS_ACCESS_KEY_ID),
        (
            "PLANTED_AWS_SECRET_ACCESS_KEY",
            planted::AWS_SECRET_ACCESS_KEY,
        ),
        ("PLANTED_PASSWORD", planted::PASSWORD),
        ("PLANTED_JWT", planted::JWT),
        ("PLANTED_DB_PASSWORD", planted::DB_PASSWORD),
        ("PLANTED_POSTGRES_URL", planted::POSTGRES_URL),
    ]
}

#[derive(Deserialize)]
struct ObjectsFile {
    applied: Vec<Value>,
    runtime: Vec<Value>,
}

/// Current time as RFC 3339 UTC with second precision, like Kubernetes timestamps.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            era * 400 + yoe + 1
        } else {
            era * 400 + yoe
        },
        m,
        d,
    )
}

/// The API server's name rule for `kind`: RBAC objects take any path segment, a Namespace a
/// DNS-1123 label, everything else a DNS-1123 subdomain.
fn valid_object_name(kind: &str, name: &str) -> bool {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    match kind {
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => {
            name != "." && name != ".." && !name.contains(['/', '%'])
        }
        "Namespace" => label(name),
        _ => name.len() <= 253 && name.split('.').all(label),
    }
}

fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

fn namespace_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/namespace").and_then(Value::as_str)
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let map = obj
        .as_object_mut()
        .expect("kubernetes objects are JSON objects");
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .expect("metadata was just made an object")
}

/// Secrets: fold `stringData` into base64 `data`, as the API server does on write.
fn normalise_secret(obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    let data = data.as_object_mut().expect("data was just made an object");
    for (k, v) in string_data {
        let text = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        data.insert(
            k,
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target_map = target
        .as_object_mut()
        .expect("target was just made an object");
    for (k, v) in patch_map {
        if v.is_null() {
            target_map.remove(k);
        } else {
            merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Drop null values recursively (the real server strips them from `to_dict()` output).
pub(crate) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

impl World {
    /// The sample account: clusters `dev`, `staging`, `prod` in us-west-2.
    pub fn sample() -> World {
        let planted = planted_vars();
        let file: WorldFile =
            serde_yaml::from_str(WORLD_YAML).expect("src/sim/world.yaml is valid");
        let mut world = World {
            account: file.account.clone(),
            region: file.region.clone(),
            clusters: BTreeMap::new(),
            addons: file.addons,
            api_resources: file.api_resources,
            roles: file
                .iam_roles
                .into_iter()
                .map(|spec| {
                    let role = IamRole {
                        inline: spec.inline.clone(),
                        spec,
                    };
                    (role.spec.name.clone(), role)
                })
                .collect(),
            documentation: file.documentation,
            troubleshooting: file.troubleshooting,
            metrics_guidance: file.metrics_guidance,
            stacks: BTreeMap::new(),
            next_uid: 1,
            next_resource_version: 1000,
        };
        for spec in file.clusters {
            let mut vars: Vec<(&str, &str)> = vec![
                ("cluster", &spec.name),
                ("octet", &spec.octet),
                ("tier", &spec.tier),
                ("account", &file.account),
                ("region", &file.region),
            ];
            vars.extend(planted.iter().copied());
            let objects: ObjectsFile =
                serde_yaml::from_str(&substitute(CLUSTER_OBJECTS_YAML, &vars))
                    .expect("src/sim/cluster-objects.yaml is valid");
            let mut insights = file.insights.clone();
            insights.iter_mut().for_each(|v| substitute_value(v, &vars));
            let mut logs = file.pod_logs.clone();
            for containers in logs.values_mut() {
                for c in containers.values_mut() {
                    for lines in [c.current.as_mut(), c.previous.as_mut()]
                        .into_iter()
                        .flatten()
                    {
                        lines.iter_mut().for_each(|l| *l = substitute(l, &vars));
                    }
                }
            }
            let name = spec.name.clone();
            world.clusters.insert(
                name.clone(),
                Cluster {
                    spec,
                    insights,
                    objects: BTreeMap::new(),
                    logs,
                },
            );
            for (mut obj, applied) in objects
                .applied
                .into_iter()
                .map(|o| (o, true))
                .chain(objects.runtime.into_iter().map(|o| (o, false)))
            {
                normalise_secret(&mut obj);
                if applied {
                    let mut last = obj.clone();
                    if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("creationTimestamp");
                        meta.remove("generation");
                    }
                    if let Some(map) = last.as_object_mut() {
                        map.remove("status");
                    }
                    let annotations = metadata_mut(&mut obj)
                        .entry("annotations")
                        .or_insert_with(|| json!({}));
                    annotations[LAST_APPLIED] = Value::String(format!("{last}\n"));
                }
                world.store_initial(&name, obj);
            }
        }
        // A stack the EKS MCP server deployed for staging earlier, with the parameters
        // CloudFormation's DescribeStacks returns as ParameterKey/ParameterValue pairs: a
        // parameter without NoEcho comes back in clear, so a password given as one leaks.
        let staging = "eks-staging-stack";
        world.stacks.insert(
            "staging".to_owned(),
            serde_json::json!({"stack_name": staging,
                "stack_id": format!("arn:aws:cloudformation:{}:{}:stack/{staging}/0c1d2e3f-4a5b-6c7d-8e9f-000000000001", world.region, world.account),
                "cluster_name": "staging", "status": "CREATE_COMPLETE",
                "creation_time": "2026-11-20T08:00:00Z", "tags": {"CreatedBy": "EksMcpServer"},
                "parameters": [
                    {"ParameterKey": "ClusterName", "ParameterValue": "staging"},
                    {"ParameterKey": "DbMasterPassword", "ParameterValue": STACK_DB_PASSWORD},
                    {"ParameterKey": "GitHubToken", "ParameterValue": STACK_GITHUB_TOKEN},
                    {"ParameterKey": "AdminApiKey", "ParameterValue": "****"},
                    {"ParameterKey": "DbSecretArn", "ParameterValue": format!("arn:aws:secretsmanager:{}:{}:secret:staging/db-master-password-Xy12Ab", world.region, world.account)},
                ]}),
        );
        world
    }

    fn store_initial(&mut self, cluster: &str, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_owned();
        let res = self
            .resolve(&api_version, &kind)
            .unwrap_or_else(|e| panic!("cluster-objects.yaml uses an unregistered kind: {e}"))
            .clone();
        let ns = if res.namespaced {
            namespace_of(&obj).unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        let name = name_of(&obj)
            .expect("every sample object has a name")
            .to_owned();
        let uid = self.mint_uid();
        let rv = self.mint_resource_version();
        let meta = metadata_mut(&mut obj);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("resourceVersion".into(), Value::String(rv));
        let cluster = self
            .clusters
            .get_mut(cluster)
            .expect("cluster inserted before its objects");
        cluster.objects.insert((res.kind.clone(), ns, name), obj);
    }

    fn mint_uid(&mut self) -> String {
        let n = self.next_uid;
        self.next_uid += 1;
        format!("5f3c2a1b-0d9e-4c8f-b7a6-{n:012x}")
    }

    fn mint_resource_version(&mut self) -> String {
        self.next_resource_version += 1;
        self.next_resource_version.to_string()
    }

    pub fn cluster_names(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }

    /// One Kubernetes object as stored (for tests: did a change reach the cluster?).
    /// `namespace` is ignored for cluster-scoped kinds.
    pub fn object(
        &self,
        cluster: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = self.resolve(api_version, kind).ok()?;
        self.get(cluster, res, namespace, name).ok()
    }

    pub(crate) fn cluster(&self, name: &str) -> Result<&Cluster, UnknownCluster> {
        self.clusters
            .get(name)
            .ok_or_else(|| UnknownCluster(name.to_owned()))
    }

    /// Find the resource type for `(api_version, kind)`. Kinds match case-insensitively, so a
    /// policy that only blocks the exact spelling `Secret` is shown to be bypassable.
    pub(crate) fn resolve(&self, api_version: &str, kind: &str) -> Result<&ApiResource, K8sError> {
        self.api_resources
            .iter()
            .find(|r| r.kind.eq_ignore_ascii_case(kind) && r.api_version == api_version)
            .ok_or_else(|| {
                K8sError::not_found(format!(
                    "No matches found for {{'api_version': '{api_version}', 'kind': '{kind}'}}"
                ))
            })
    }

    /// All objects of one type; `namespace: None` spans every namespace.
    pub(crate) fn list(
        &self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
    ) -> Vec<&Value> {
        let Ok(c) = self.cluster(cluster) else {
            return Vec::new();
        };
        c.objects
            .iter()
            .filter(|((kind, ns, _), _)| {
                *kind == res.kind && (!res.namespaced || namespace.is_none_or(|want| ns == want))
            })
            .map(|(_, v)| v)
            .collect()
    }

    fn key(res: &ApiResource, namespace: Option<&str>, name: &str) -> Result<ObjKey, K8sError> {
        let ns = if res.namespaced {
            namespace
                .ok_or_else(|| {
                    K8sError::bad_request(format!(
                        "Namespace is required for {}.{}",
                        res.kind, res.api_version
                    ))
                })?
                .to_owned()
        } else {
            String::new()
        };
        Ok((res.kind.clone(), ns, name.to_owned()))
    }

    fn cluster_mut(&mut self, cluster: &str) -> Result<&mut Cluster, K8sError> {
        self.clusters
            .get_mut(cluster)
            .ok_or_else(|| K8sError::not_found(UnknownCluster(cluster.to_owned()).to_string()))
    }

    pub(crate) fn get(
        &self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, K8sError> {
        let key = Self::key(res, namespace, name)?;
        let c = self
            .cluster(cluster)
            .map_err(|e| K8sError::not_found(e.to_string()))?;
        c.objects.get(&key).cloned().ok_or_else(|| {
            K8sError::not_found(format!("{} \"{name}\" not found", res.qualified_plural()))
        })
    }

    fn ensure_namespace(&self, cluster: &str, res: &ApiResource, ns: &str) -> Result<(), K8sError> {
        if !res.namespaced {
            return Ok(());
        }
        let c = self
            .cluster(cluster)
            .map_err(|e| K8sError::not_found(e.to_string()))?;
        if c.objects
            .contains_key(&("Namespace".to_owned(), String::new(), ns.to_owned()))
        {
            Ok(())
        } else {
            Err(K8sError::not_found(format!(
                "namespaces \"{ns}\" not found"
            )))
        }
    }

    /// Prepare a body for write: canonical kind/apiVersion, name and namespace settled.
    fn prepare(
        res: &ApiResource,
        namespace: Option<&str>,
        name: Option<&str>,
        body: &Value,
    ) -> Result<(Value, Option<String>, String), K8sError> {
        let mut obj = body.clone();
        if !obj.is_object() {
            return Err(K8sError::bad_request(format!(
                "the body of a {} must be a JSON object",
                res.kind
            )));
        }
        obj["apiVersion"] = Value::String(res.api_version.clone());
        obj["kind"] = Value::String(res.kind.clone());
        if let Some(name) = name {
            metadata_mut(&mut obj).insert("name".into(), Value::String(name.to_owned()));
        }
        if let Some(ns) = namespace.filter(|_| res.namespaced) {
            metadata_mut(&mut obj).insert("namespace".into(), Value::String(ns.to_owned()));
        }
        let name = name_of(&obj).map(str::to_owned).ok_or_else(|| {
            K8sError::invalid(format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                res.kind
            ))
        })?;
        if !valid_object_name(&res.kind, &name) {
            return Err(K8sError::invalid(format!(
                "{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                res.kind
            )));
        }
        let ns = if res.namespaced {
            Some(namespace_of(&obj).map(str::to_owned).ok_or_else(|| {
                K8sError::bad_request(format!(
                    "Namespace is required for {}.{}",
                    res.kind, res.api_version
                ))
            })?)
        } else {
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("namespace");
            }
            None
        };
        if res.kind == "Secret" {
            normalise_secret(&mut obj);
        }
        if let Some(map) = obj.as_object_mut() {
            // Server-populated fields are not taken from clients.
            if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                meta.remove("uid");
                meta.remove("resourceVersion");
                meta.remove("managedFields");
            }
        }
        Ok((obj, ns, name))
    }

    /// Create an object; namespace from the argument, else from `body.metadata.namespace`.
    pub(crate) fn create(
        &mut self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
        name: Option<&str>,
        body: &Value,
    ) -> Result<Value, K8sError> {
        let (mut obj, ns, name) = Self::prepare(res, namespace, name, body)?;
        if let Some(ns) = &ns {
            self.ensure_namespace(cluster, res, ns)?;
        }
        let key = Self::key(res, ns.as_deref(), &name)?;
        if self
            .cluster(cluster)
            .map_err(|e| K8sError::not_found(e.to_string()))?
            .objects
            .contains_key(&key)
        {
            return Err(K8sError::conflict(format!(
                "{} \"{name}\" already exists",
                res.qualified_plural()
            )));
        }
        let uid = self.mint_uid();
        let rv = self.mint_resource_version();
        let meta = metadata_mut(&mut obj);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("resourceVersion".into(), Value::String(rv));
        meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
        if obj.get("spec").is_some() && res.kind != "Pod" {
            metadata_mut(&mut obj).insert("generation".into(), json!(1));
        }
        if res.kind == "Pod" && obj.get("status").is_none() {
            obj["status"] = json!({"phase": "Pending"});
        }
        self.cluster_mut(cluster)?.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Replace an existing object, keeping its identity (uid, creation time).
    pub(crate) fn replace(
        &mut self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
        name: Option<&str>,
        body: &Value,
    ) -> Result<Value, K8sError> {
        let (mut obj, ns, name) = Self::prepare(res, namespace, name, body)?;
        let current = self.get(cluster, res, ns.as_deref(), &name)?;
        let rv = self.mint_resource_version();
        let meta = metadata_mut(&mut obj);
        for field in ["uid", "creationTimestamp"] {
            if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
                meta.insert(field.into(), v.clone());
            }
        }
        meta.insert("resourceVersion".into(), Value::String(rv));
        if let Some(generation) = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
        {
            meta.insert("generation".into(), json!(generation + 1));
        }
        let key = Self::key(res, ns.as_deref(), &name)?;
        self.cluster_mut(cluster)?.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Merge-patch an existing object (strategic merge behaves the same for maps).
    pub(crate) fn patch(
        &mut self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value, K8sError> {
        let ns = if res.namespaced {
            namespace
                .or_else(|| patch.pointer("/metadata/namespace").and_then(Value::as_str))
                .map(str::to_owned)
        } else {
            None
        };
        let mut obj = self.get(cluster, res, ns.as_deref(), name)?;
        let mut patch = patch.clone();
        if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "creationTimestamp",
            ] {
                meta.remove(field);
            }
        }
        if let Some(map) = patch.as_object_mut() {
            map.remove("kind");
            map.remove("apiVersion");
        }
        merge_patch(&mut obj, &patch);
        if res.kind == "Secret" {
            normalise_secret(&mut obj);
        }
        let rv = self.mint_resource_version();
        metadata_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv));
        if patch.get("spec").is_some()
            && let Some(generation) = obj.pointer("/metadata/generation").and_then(Value::as_i64)
        {
            metadata_mut(&mut obj).insert("generation".into(), json!(generation + 1));
        }
        let key = Self::key(res, ns.as_deref(), name)?;
        self.cluster_mut(cluster)?.objects.insert(key, obj.clone());
        Ok(obj)
    }

    /// Delete an object; deleting a Namespace deletes everything in it.
    pub(crate) fn delete(
        &mut self,
        cluster: &str,
        res: &ApiResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, K8sError> {
        let obj = self.get(cluster, res, namespace, name)?;
        let key = Self::key(res, namespace, name)?;
        let c = self.cluster_mut(cluster)?;
        c.objects.remove(&key);
        if res.kind == "Namespace" {
            c.objects.retain(|(_, ns, _), _| ns != name);
        }
        Ok(obj)
    }

    /// Logs of one container, resolved like `kubectl logs` (container required when the pod
    /// has several; `previous` needs a terminated container).
    pub(crate) fn pod_logs(
        &self,
        cluster: &str,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<(String, LogSource), K8sError> {
        let pod_res = self.resolve("v1", "Pod")?.clone();
        let obj = self.get(cluster, &pod_res, Some(namespace), pod)?;
        let containers: Vec<&str> = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c["name"].as_str()).collect())
            .unwrap_or_default();
        let container = match container {
            Some(c) if containers.contains(&c) => c.to_owned(),
            Some(c) => {
                return Err(K8sError::bad_request(format!(
                    "container {c} is not valid for pod {pod}"
                )));
            }
            None if containers.len() == 1 => containers[0].to_owned(),
            None => {
                return Err(K8sError::bad_request(format!(
                    "a container name must be specified for pod {pod}, choose one of: [{}]",
                    containers.join(" ")
                )));
            }
        };
        let c = self
            .cluster(cluster)
            .map_err(|e| K8sError::not_found(e.to_string()))?;
        let logs = c.logs.get(pod).and_then(|m| m.get(&container));
        if let Some(generate) = logs.and_then(|l| l.generate) {
            if previous {
                return Err(K8sError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                )));
            }
            return Ok((
                container,
                LogSource::Generated {
                    total: generate.lines,
                    pod: pod.to_owned(),
                    cluster: cluster.to_owned(),
                },
            ));
        }
        let lines = if previous {
            logs.and_then(|l| l.previous.clone()).ok_or_else(|| {
                K8sError::bad_request(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            })?
        } else {
            logs.and_then(|l| l.current.clone()).unwrap_or_default()
        };
        Ok((container, LogSource::Lines(lines)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_world_loads_three_clusters_with_planted_secrets() {
        let world = World::sample();
        assert_eq!(world.cluster_names(), ["dev", "prod", "staging"]);
        let secret_res = world.resolve("v1", "secret").unwrap().clone();
        let secret = world
            .get(
                "prod",
                &secret_res,
                Some("payments"),
                "payments-db-credentials",
            )
            .unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(planted::DB_PASSWORD);
        assert_eq!(secret["data"]["password"], encoded.as_str());
        let last = secret["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert!(
            last.contains(&encoded),
            "last-applied-configuration repeats the data"
        );
        let (container, logs) = world
            .pod_logs("dev", "payments", CRASHLOOP_POD, None, false)
            .unwrap();
        assert_eq!(container, "worker");
        let text = logs.tail(1000).join("\n");
        for secret in planted::ALL.iter().filter(|s| **s != planted::DB_PASSWORD) {
            assert!(text.contains(secret), "logs carry {secret}");
        }
        assert!(!text.contains("${"), "every placeholder was filled: {text}");
    }

    #[test]
    fn generated_logs_tail_is_deterministic() {
        let world = World::sample();
        let (_, logs) = world
            .pod_logs("dev", "monitoring", BULK_LOGGER_POD, None, false)
            .unwrap();
        let tail = logs.tail(3);
        assert_eq!(tail.len(), 3);
        assert!(tail[2].contains("seq=199999"));
        assert_eq!(tail, logs.tail(3));
        assert_eq!(logs.tail(1_000_000).len(), 200_000);
    }

    #[test]
    fn create_uses_body_namespace_and_rejects_duplicates_and_missing_namespaces() {
        let mut world = World::sample();
        let res = world.resolve("v1", "ConfigMap").unwrap().clone();
        let body = json!({"metadata": {"name": "x", "namespace": "checkout"}, "data": {"a": "1"}});
        let created = world.create("dev", &res, None, None, &body).unwrap();
        assert_eq!(created["metadata"]["namespace"], "checkout");
        let err = world.create("dev", &res, None, None, &body).unwrap_err();
        assert_eq!(err.status, 409);
        let err = world
            .create("dev", &res, Some("nope"), None, &body)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "(404) Reason: Not Found: namespaces \"nope\" not found"
        );
        assert!(
            world.get("staging", &res, Some("checkout"), "x").is_err(),
            "clusters are separate"
        );
    }

    #[test]
    fn deleting_a_namespace_deletes_its_objects() {
        let mut world = World::sample();
        let ns = world.resolve("v1", "Namespace").unwrap().clone();
        let pods = world.resolve("v1", "Pod").unwrap().clone();
        assert!(!world.list("dev", &pods, Some("payments")).is_empty());
        world.delete("dev", &ns, None, "payments").unwrap();
        assert!(world.list("dev", &pods, Some("payments")).is_empty());
        assert!(!world.list("prod", &pods, Some("payments")).is_empty());
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
    }
}
