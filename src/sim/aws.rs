//! The simulator's AWS-side tools: EKS describe/list/insights/VPC, CloudWatch logs and
//! metrics, IAM role policies, CloudFormation stacks and the two search tools.
//!
//! Answers are computed from the world data so they are deterministic (apart from times
//! relative to "now"), plausible in shape, and change when privileged tools change the world.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::tools::{Args, ToolOutput};
use super::world::{Cluster, World, rfc3339};

pub(crate) fn call(world: &mut World, name: &str, a: &Args) -> ToolOutput {
    match name {
        "list_eks_resources" => list_eks_resources(world, a),
        "describe_eks_resource" => describe_eks_resource(world, a),
        "get_eks_insights" => get_eks_insights(world, a),
        "get_eks_vpc_config" => get_eks_vpc_config(world, a),
        "get_cloudwatch_logs" => get_cloudwatch_logs(world, a),
        "get_cloudwatch_metrics" => get_cloudwatch_metrics(world, a),
        "get_eks_metrics_guidance" => get_eks_metrics_guidance(world, a),
        "get_policies_for_role" => get_policies_for_role(world, a),
        "add_inline_policy" => add_inline_policy(world, a),
        "manage_eks_stacks" => manage_eks_stacks(world, a),
        "search_eks_documentation" => search_eks_documentation(world, a),
        "search_eks_troubleshooting_guide" | "search_eks_troubleshoot_guide" => {
            search_troubleshooting(world, a)
        }
        other => ToolOutput::error(format!(
            "Tool {other} is listed but has no handler in the simulator"
        )),
    }
}

fn cluster_arn(world: &World, name: &str) -> String {
    format!(
        "arn:aws:eks:{}:{}:cluster/{name}",
        world.region, world.account
    )
}

fn describe_cluster(world: &World, c: &Cluster) -> Value {
    let s = &c.spec;
    json!({
        "name": s.name,
        "arn": cluster_arn(world, &s.name),
        "createdAt": s.created_at,
        "version": s.version,
        "endpoint": format!("https://{:X}{}.gr7.{}.eks.amazonaws.com", 0xA1B2C3D4u32, s.octet, world.region),
        "roleArn": format!("arn:aws:iam::{}:role/eks-cluster-role", world.account),
        "resourcesVpcConfig": {
            "subnetIds": subnets(c).iter().map(|s| s["subnet_id"].clone()).collect::<Vec<_>>(),
            "securityGroupIds": [format!("sg-0{}aa11bb22cc33dd", s.octet)],
            "clusterSecurityGroupId": format!("sg-0{}ee44ff55aa66bb", s.octet),
            "vpcId": s.vpc.vpc_id,
            "endpointPublicAccess": s.endpoint_public_access,
            "endpointPrivateAccess": true,
            "publicAccessCidrs": if s.endpoint_public_access { json!(["0.0.0.0/0"]) } else { json!([]) },
        },
        "kubernetesNetworkConfig": {"serviceIpv4Cidr": "172.20.0.0/16", "ipFamily": "ipv4"},
        "logging": {"clusterLogging": [{"types": ["api", "audit", "authenticator"], "enabled": true}]},
        "identity": {"oidc": {"issuer": format!("https://oidc.eks.{}.amazonaws.com/id/5C1A{}D0E2F3A4B5C6D7E8F9A0B1C2D3", world.region, s.octet)}},
        "status": "ACTIVE",
        "certificateAuthority": {"data": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUMvakNDQWVhZ0F3SUJBZ0lCQURBTkJna3Foa2lHOXcwQkFRc0ZBREFWTVJNd0VRWURWUVFERXdwcmRXSmwKY201bGRHVnpNQjRYRFRJMk1ETXdNakEzTkRVd01Gb1hEVE0yTURJeU9EQTNORFV3TUZvd0ZURVRNQkVHQTFVRQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="},
        "platformVersion": s.platform_version,
        "tags": {"environment": s.tier, "team": "platform"},
        "accessConfig": {"authenticationMode": "API_AND_CONFIG_MAP"},
    })
}

fn nodegroup(world: &World, c: &Cluster) -> Value {
    let s = &c.spec;
    let name = format!("{}-general", s.name);
    json!({
        "nodegroupName": name,
        "nodegroupArn": format!("arn:aws:eks:{}:{}:nodegroup/{}/{name}/0ac9d1e2-3f4a-5b6c-7d8e-9f0a1b2c3d{}", world.region, world.account, s.name, s.octet),
        "clusterName": s.name,
        "version": s.version,
        "releaseVersion": format!("{}.4-20241213", s.version),
        "createdAt": s.created_at,
        "status": "ACTIVE",
        "capacityType": "ON_DEMAND",
        "scalingConfig": {"minSize": s.nodegroup.min, "maxSize": s.nodegroup.max, "desiredSize": s.nodegroup.desired},
        "instanceTypes": [s.nodegroup.instance_type],
        "subnets": subnets(c).iter().filter(|s| s["is_public"] == false).map(|s| s["subnet_id"].clone()).collect::<Vec<_>>(),
        "amiType": "AL2023_x86_64_STANDARD",
        "nodeRole": format!("arn:aws:iam::{}:role/eks-{}-node-role", world.account, s.name),
        "health": {"issues": []},
    })
}

fn addon(world: &World, c: &Cluster, name: &str, version: &str) -> Value {
    json!({
        "addonName": name,
        "clusterName": c.spec.name,
        "status": "ACTIVE",
        "addonVersion": version,
        "health": {"issues": []},
        "addonArn": format!("arn:aws:eks:{}:{}:addon/{}/{name}/0ac9d1e2-{}", world.region, world.account, c.spec.name, c.spec.octet),
        "createdAt": c.spec.created_at,
    })
}

fn subnets(c: &Cluster) -> Vec<Value> {
    let o = &c.spec.octet;
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .flat_map(|(i, az)| {
            [(true, i), (false, i + 10)].map(|(public, third)| {
                json!({
                    "subnet_id": format!("subnet-0{o}{}{third:02}c4d5e6f7a8", if public { "p" } else { "q" }),
                    "cidr_block": format!("10.{o}.{third}.0/24"),
                    "az_id": format!("usw2-az{}", i + 1),
                    "availability_zone": format!("us-west-2{az}"),
                    "available_ips": 240 - (third * 7) % 50,
                    "is_public": public,
                    "assign_public_ip": public,
                    "disallowed_for_eks": false,
                })
            })
        })
        .collect()
}

fn list_eks_resources(world: &mut World, a: &Args) -> ToolOutput {
    let kind = a.req("resource_type");
    if kind == "cluster" {
        let names = world.cluster_names();
        return ToolOutput::success(
            format!("Successfully listed {} EKS clusters", names.len()),
            json!({"resource_type": "cluster", "count": names.len(), "clusters": names}),
        );
    }
    let Some(cluster) = a.str("cluster_name") else {
        return ToolOutput::error(format!(
            "cluster_name is required when resource_type is '{kind}'"
        ));
    };
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!("Failed to list {kind} resources: {e}"));
    }
    let names: Vec<String> = if kind == "nodegroup" {
        vec![format!("{cluster}-general")]
    } else {
        world.addons.iter().map(|a| a.name.clone()).collect()
    };
    ToolOutput::success(
        format!(
            "Successfully listed {} {kind} resources in cluster {cluster}",
            names.len()
        ),
        json!({"resource_type": kind, "cluster_name": cluster, "count": names.len(), format!("{kind}s"): names}),
    )
}

fn describe_eks_resource(world: &mut World, a: &Args) -> ToolOutput {
    let (kind, cluster) = (a.req("resource_type"), a.req("cluster_name"));
    let c = match world.cluster(cluster) {
        Ok(c) => c,
        Err(e) => return ToolOutput::error(format!("Failed to describe {kind}: {e}")),
    };
    let described = match (kind, a.str("resource_name")) {
        ("cluster", _) => Ok(json!({"cluster": describe_cluster(world, c)})),
        (_, None) => Err(format!(
            "resource_name is required when resource_type is '{kind}'"
        )),
        ("nodegroup", Some(n)) if n == format!("{cluster}-general") => {
            Ok(json!({"nodegroup": nodegroup(world, c)}))
        }
        ("nodegroup", Some(n)) => Err(format!(
            "An error occurred (ResourceNotFoundException) when calling the DescribeNodegroup operation: No node group found for name: {n}."
        )),
        (_, Some(n)) => match world.addons.iter().find(|x| x.name == n) {
            Some(spec) => Ok(json!({"addon": addon(world, c, &spec.name, &spec.version)})),
            None => Err(format!(
                "An error occurred (ResourceNotFoundException) when calling the DescribeAddon operation: No addon: {n} found in cluster: {cluster}"
            )),
        },
    };
    match described {
        Ok(data) => ToolOutput::success(
            format!("Successfully described {kind} in cluster {cluster}"),
            data,
        ),
        Err(e) => ToolOutput::error(format!("Failed to describe {kind}: {e}")),
    }
}

fn get_eks_insights(world: &mut World, a: &Args) -> ToolOutput {
    let cluster = a.req("cluster_name");
    let c = match world.cluster(cluster) {
        Ok(c) => c,
        Err(e) => {
            return ToolOutput::error(format!("Failed to get insights for cluster {cluster}: {e}"));
        }
    };
    let summary = |i: &Value, detail: bool| {
        let mut v = json!({
            "id": i["id"], "name": i["name"], "category": i["category"],
            "kubernetes_version": i["kubernetesVersion"],
            "last_refresh_time": "2026-11-25T06:00:00Z", "last_transition_time": "2026-11-20T06:00:00Z",
            "description": i["description"], "insight_status": i["status"],
        });
        if detail {
            v["recommendation"] = i["recommendation"].clone();
            v["additional_info"] = json!({"Kubernetes documentation": "https://kubernetes.io/docs/reference/using-api/deprecation-guide/"});
            v["resources"] = json!([]);
        }
        v
    };
    if let Some(id) = a.str("insight_id") {
        return match c.insights.iter().find(|i| i["id"] == id) {
            Some(i) => ToolOutput::success(
                format!("Successfully retrieved details for insight {id}"),
                json!({"cluster_name": cluster, "insights": [summary(i, true)], "next_token": null, "detail_mode": true}),
            ),
            None => ToolOutput::error(format!(
                "Failed to get insight {id}: An error occurred (ResourceNotFoundException) when calling the DescribeInsight operation: Insight {id} not found"
            )),
        };
    }
    let category = a.str("category");
    let insights: Vec<Value> = c
        .insights
        .iter()
        .filter(|i| category.is_none_or(|want| i["category"] == want))
        .map(|i| summary(i, false))
        .collect();
    ToolOutput::success(
        format!(
            "Successfully retrieved {} insights for cluster {cluster}",
            insights.len()
        ),
        json!({"cluster_name": cluster, "insights": insights, "next_token": null, "detail_mode": false}),
    )
}

fn get_eks_vpc_config(world: &mut World, a: &Args) -> ToolOutput {
    let cluster = a.req("cluster_name");
    let c = match world.cluster(cluster) {
        Ok(c) => c,
        Err(e) => {
            return ToolOutput::error(format!(
                "Failed to get VPC configuration for cluster {cluster}: {e}"
            ));
        }
    };
    let vpc_id = a.str("vpc_id").unwrap_or(&c.spec.vpc.vpc_id);
    if vpc_id != c.spec.vpc.vpc_id {
        return ToolOutput::error(format!(
            "Failed to get VPC configuration for cluster {cluster}: An error occurred (InvalidVpcID.NotFound) when calling the DescribeVpcs operation: The vpc ID '{vpc_id}' does not exist"
        ));
    }
    let o = &c.spec.octet;
    ToolOutput::success(
        format!("Retrieved VPC configuration for {vpc_id} (cluster {cluster})"),
        json!({
            "vpc_id": vpc_id,
            "cidr_block": c.spec.vpc.cidr,
            "additional_cidr_blocks": [],
            "routes": [
                {"destination_cidr_block": c.spec.vpc.cidr, "target_type": "local", "target_id": "local", "state": "active"},
                {"destination_cidr_block": "0.0.0.0/0", "target_type": "nat-gateway", "target_id": format!("nat-0{o}1a2b3c4d5e6f7"), "state": "active"},
            ],
            "remote_node_cidr_blocks": [],
            "remote_pod_cidr_blocks": [],
            "subnets": subnets(c),
            "cluster_name": cluster,
        }),
    )
}

fn get_cloudwatch_logs(world: &mut World, a: &Args) -> ToolOutput {
    let (resource_type, cluster, log_type) = (
        a.req("resource_type"),
        a.req("cluster_name"),
        a.req("log_type"),
    );
    let resource_name = a.str("resource_name");
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!("Failed to get logs for {resource_type}: {e}"));
    }
    if !matches!(resource_type, "pod" | "node" | "container" | "cluster") {
        return ToolOutput::error(format!(
            "Invalid resource_type: {resource_type}. Valid values are: pod, node, container, cluster"
        ));
    }
    let log_group = match log_type {
        "application" | "host" | "performance" | "dataplane" => {
            format!("/aws/containerinsights/{cluster}/{log_type}")
        }
        "control-plane" => format!("/aws/eks/{cluster}/cluster"),
        custom => custom.to_owned(),
    };
    let minutes = a.int("minutes", 15).max(1) as u64;
    let limit = a.int("limit", 50).max(1) as usize;
    let now = SystemTime::now();
    let start = a
        .str("start_time")
        .map(str::to_owned)
        .unwrap_or_else(|| rfc3339(now - Duration::from_secs(minutes * 60)));
    let end = a
        .str("end_time")
        .map(str::to_owned)
        .unwrap_or_else(|| rfc3339(now));
    let filter = a
        .str("filter_pattern")
        .map(|f| f.trim_matches('"').to_owned());

    // Application logs come from the pods' container logs; others are synthesised.
    let mut raw: Vec<(String, String)> = Vec::new();
    if log_type == "application" {
        let pods = world.resolve("v1", "Pod").cloned();
        if let Ok(pod_res) = pods {
            let pods: Vec<(String, String)> = world
                .list(cluster, &pod_res, None)
                .into_iter()
                .filter_map(|p| {
                    Some((
                        p.pointer("/metadata/namespace")?.as_str()?.to_owned(),
                        p.pointer("/metadata/name")?.as_str()?.to_owned(),
                    ))
                })
                .filter(|(_, name)| resource_name.is_none_or(|want| name == want))
                .collect();
            for (ns, pod) in pods {
                let containers: Vec<String> = world
                    .get(cluster, &pod_res, Some(&ns), &pod)
                    .ok()
                    .and_then(|p| p.pointer("/spec/containers").cloned())
                    .and_then(|c| {
                        c.as_array().map(|cs| {
                            cs.iter()
                                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                                .collect()
                        })
                    })
                    .unwrap_or_default();
                for container in containers {
                    if let Ok((_, source)) =
                        world.pod_logs(cluster, &ns, &pod, Some(&container), false)
                    {
                        for line in source.tail(limit) {
                            if !line.is_empty() {
                                raw.push((format!("{pod}_{ns}_{container}"), line));
                            }
                        }
                    }
                }
            }
        }
    } else {
        let subject = resource_name.unwrap_or(cluster);
        for i in 0..limit.min(20) {
            raw.push((
                format!("{subject}-{log_type}"),
                match log_type {
                    "control-plane" => format!("I1125 10:{:02}:00.000000 1 httplog.go:132] \"HTTP\" verb=\"GET\" URI=\"/api/v1/namespaces/payments/pods\" latency=\"{}ms\" resp=200", i % 60, 3 + i % 9),
                    "performance" => format!("{{\"Type\":\"Pod\",\"ClusterName\":\"{cluster}\",\"pod_cpu_utilization\":{:.2},\"pod_memory_utilization\":{:.2}}}", 10.0 + (i as f64 * 1.7) % 30.0, 20.0 + (i as f64 * 2.3) % 40.0),
                    _ => format!("kubelet[2291]: I1125 10:{:02}:00.000000 2291 kubelet.go:2468] \"SyncLoop (PLEG): event for pod\" subject=\"{subject}\"", i % 60),
                },
            ));
        }
    }
    let entries: Vec<Value> = raw
        .into_iter()
        .filter(|(_, msg)| filter.as_deref().is_none_or(|f| msg.contains(f)))
        .take(limit)
        .enumerate()
        .map(|(i, (stream, msg))| {
            json!({"timestamp": rfc3339(now - Duration::from_secs((minutes * 60).saturating_sub(i as u64 * 5))), "log_stream": stream, "message": msg})
        })
        .collect();
    ToolOutput::success(
        format!(
            "Successfully retrieved {} log entries from {log_group}",
            entries.len()
        ),
        json!({
            "resource_type": resource_type, "resource_name": resource_name, "cluster_name": cluster,
            "log_type": log_type, "log_group": log_group, "start_time": start, "end_time": end,
            "log_entries": entries,
        }),
    )
}

fn get_cloudwatch_metrics(world: &mut World, a: &Args) -> ToolOutput {
    let (cluster, metric, namespace) = (
        a.req("cluster_name"),
        a.req("metric_name"),
        a.req("namespace"),
    );
    if let Err(e) = world.cluster(cluster) {
        return ToolOutput::error(format!("Failed to get metric {metric}: {e}"));
    }
    let period = a.int("period", 60).max(1) as u64;
    let minutes = a.int("minutes", 15).max(1) as u64;
    let limit = a.int("limit", 50).max(1) as u64;
    let stat = a.str("stat").unwrap_or("Average");
    let seed = metric
        .bytes()
        .chain(cluster.bytes())
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let base = 10.0 + (seed % 50) as f64;
    let points = (minutes * 60 / period).clamp(1, limit);
    let now = SystemTime::now();
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for i in 0..points {
        timestamps.push(rfc3339(now - Duration::from_secs((points - i) * period)));
        let wobble = ((i as f64) * 0.7 + (seed % 13) as f64).sin() * base * 0.2;
        values.push(((base + wobble) * 100.0).round() / 100.0);
    }
    ToolOutput::success(
        format!(
            "Successfully retrieved {points} datapoints for metric {metric} ({stat}) in {namespace}"
        ),
        json!({
            "metric_name": metric, "namespace": namespace, "cluster_name": cluster,
            "dimensions": a.value("dimensions").cloned().unwrap_or(json!({})),
            "period": period, "stat": stat, "timestamps": timestamps, "values": values,
        }),
    )
}

fn get_eks_metrics_guidance(world: &mut World, a: &Args) -> ToolOutput {
    let kind = a.req("resource_type");
    match world.metrics_guidance.get(kind) {
        Some(metrics) => ToolOutput::success(
            format!(
                "Successfully retrieved {} metrics for resource type {kind}",
                metrics.len()
            ),
            json!({"resource_type": kind, "metrics": metrics}),
        ),
        None => ToolOutput::error(format!(
            "Invalid resource type: {kind}. Must be one of: {}",
            world
                .metrics_guidance
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn get_policies_for_role(world: &mut World, a: &Args) -> ToolOutput {
    let role_name = a.req("role_name");
    let Some(role) = world.roles.get(role_name) else {
        return ToolOutput::error(format!(
            "Failed to describe IAM role: An error occurred (NoSuchEntity) when calling the GetRole operation: The role with name {role_name} cannot be found."
        ));
    };
    let managed: Vec<Value> = role
        .spec
        .managed
        .iter()
        .map(|arn| json!({"policy_type": "Managed", "description": null, "policy_document": null, "policy_arn": arn}))
        .collect();
    let inline: Vec<Value> = role
        .inline
        .iter()
        .map(|(name, doc)| json!({"policy_type": "Inline", "policy_name": name, "policy_document": doc}))
        .collect();
    ToolOutput::success(
        format!("Successfully retrieved details for IAM role: {role_name}"),
        json!({
            "role_arn": format!("arn:aws:iam::{}:role/{role_name}", world.account),
            "assume_role_policy_document": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": role.spec.trust_service}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]},
            "description": role.spec.description,
            "managed_policies": managed,
            "inline_policies": inline,
        }),
    )
}

fn add_inline_policy(world: &mut World, a: &Args) -> ToolOutput {
    let (policy_name, role_name) = (a.req("policy_name"), a.req("role_name"));
    let statements = match a.value("permissions") {
        Some(Value::Array(items)) => items.clone(),
        Some(obj @ Value::Object(_)) => vec![obj.clone()],
        _ => {
            return ToolOutput::error(
                "permissions must be an IAM statement object or a list of statements",
            );
        }
    };
    let Some(role) = world.roles.get_mut(role_name) else {
        return ToolOutput::error(format!(
            "Failed to create inline policy: An error occurred (NoSuchEntity) when calling the PutRolePolicy operation: The role with name {role_name} cannot be found."
        ));
    };
    if role.inline.contains_key(policy_name) {
        return ToolOutput::error(format!(
            "Policy {policy_name} already exists in role {role_name}. Cannot modify existing policies."
        ));
    }
    let document = json!({"Version": "2012-10-17", "Statement": statements});
    role.inline.insert(policy_name.to_owned(), document.clone());
    ToolOutput::success(
        format!("Successfully created new inline policy {policy_name} in role {role_name}"),
        json!({"policy_name": policy_name, "role_name": role_name, "permissions_added": document}),
    )
    .with_change(
        format!("added inline policy {policy_name} to IAM role {role_name}"),
        false,
    )
}

fn stack_name(cluster: &str) -> String {
    format!("eks-{cluster}-stack")
}

fn manage_eks_stacks(world: &mut World, a: &Args) -> ToolOutput {
    let operation = a.req("operation");
    if !matches!(operation, "generate" | "deploy" | "describe" | "delete") {
        return ToolOutput::error(format!(
            "Invalid operation: {operation}. Must be one of: generate, deploy, describe, delete"
        ));
    }
    let Some(cluster) = a.str("cluster_name") else {
        return ToolOutput::error(format!(
            "cluster_name is required for {operation} operation"
        ));
    };
    let stack = stack_name(cluster);
    match operation {
        "generate" => {
            let template = format!(
                "AWSTemplateFormatVersion: '2010-09-09'\nDescription: EKS Auto Mode cluster {cluster} with VPC (generated by the EKS MCP server)\nParameters:\n  ClusterName: {{Type: String, Default: {cluster}}}\nResources:\n  VPC: {{Type: AWS::EC2::VPC, Properties: {{CidrBlock: 10.0.0.0/16}}}}\n  EksCluster:\n    Type: AWS::EKS::Cluster\n    Properties:\n      Name: !Ref ClusterName\n      ComputeConfig: {{Enabled: true, NodePools: [general-purpose, system]}}\n"
            );
            ToolOutput::success(
                format!("CloudFormation template generated for cluster {cluster}"),
                json!({"cluster_name": cluster, "template_path": a.str("template_file"), "template": template}),
            )
        }
        "deploy" => {
            let updating = world.stacks.contains_key(cluster);
            let stack_id = format!(
                "arn:aws:cloudformation:{}:{}:stack/{stack}/4e5f6a7b-8c9d-0e1f-2a3b-{:012}",
                world.region,
                world.account,
                world.stacks.len() + 1
            );
            let status = if updating {
                "UPDATE_IN_PROGRESS"
            } else {
                "CREATE_IN_PROGRESS"
            };
            world.stacks.insert(
                cluster.to_owned(),
                json!({"stack_name": stack, "stack_id": stack_id, "cluster_name": cluster, "status": status, "creation_time": super::world::now_rfc3339(), "tags": {"CreatedBy": "EksMcpServer"}}),
            );
            ToolOutput::success(
                format!(
                    "CloudFormation stack {stack} {} for cluster {cluster}",
                    if updating {
                        "update started"
                    } else {
                        "creation started"
                    }
                ),
                json!({"stack_name": stack, "stack_arn": stack_id, "cluster_name": cluster}),
            )
            .with_change(format!("deployed CloudFormation stack {stack}"), false)
        }
        "describe" => match world.stacks.get(cluster) {
            Some(s) => ToolOutput::success(
                format!("Successfully described CloudFormation stack {stack}"),
                json!({"stack_name": stack, "stack_id": s["stack_id"], "cluster_name": cluster, "stack_status": s["status"], "creation_time": s["creation_time"], "parameters": s.get("parameters").cloned().unwrap_or_else(|| json!([])), "outputs": {"ClusterArn": cluster_arn(world, cluster)}}),
            ),
            None => ToolOutput::error(format!(
                "No CloudFormation stack found for cluster {cluster} (expected stack name {stack})"
            )),
        },
        _ => match world.stacks.remove(cluster) {
            Some(s) => ToolOutput::success(
                format!("Initiated deletion of CloudFormation stack {stack}"),
                json!({"stack_name": stack, "stack_id": s["stack_id"], "cluster_name": cluster}),
            )
            .with_change(format!("deleted CloudFormation stack {stack}"), false),
            None => ToolOutput::error(format!(
                "Stack {stack} was not created by this tool (or does not exist). For safety, only stacks created by the EKS MCP server can be deleted."
            )),
        },
    }
}

/// Relevance: how many distinct query words (3+ letters) appear in the text.
fn score(query: &str, text: &str) -> usize {
    let text = text.to_lowercase();
    let mut words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    words.iter().filter(|w| text.contains(w.as_str())).count()
}

fn search_eks_documentation(world: &mut World, a: &Args) -> ToolOutput {
    let query = a.req("query");
    let limit = a.int("limit", 5);
    if !(1..=10).contains(&limit) {
        return ToolOutput::error(format!("limit must be between 1 and 10, got {limit}"));
    }
    let mut hits: Vec<(usize, &super::world::DocEntry)> = world
        .documentation
        .iter()
        .map(|d| (score(query, &format!("{} {}", d.title, d.text)), d))
        .filter(|(s, _)| *s > 0)
        .collect();
    hits.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    let results: Vec<Value> = hits
        .into_iter()
        .take(limit as usize)
        .map(|(_, d)| json!({"title": d.title, "url": d.url, "content": d.text}))
        .collect();
    ToolOutput::success(
        format!(
            "Found {} documentation results for '{query}'",
            results.len()
        ),
        json!({"query": query, "results": results}),
    )
}

fn search_troubleshooting(world: &mut World, a: &Args) -> ToolOutput {
    let query = a.req("query");
    let mut hits: Vec<(usize, &super::world::GuideEntry)> = world
        .troubleshooting
        .iter()
        .map(|g| (score(query, &format!("{} {}", g.title, g.text)), g))
        .filter(|(s, _)| *s > 0)
        .collect();
    hits.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    let results: Vec<Value> = hits
        .into_iter()
        .take(3)
        .map(|(_, g)| json!({"title": g.title, "content": g.text}))
        .collect();
    ToolOutput::text(json!({"query": query, "results": results}).to_string())
}
