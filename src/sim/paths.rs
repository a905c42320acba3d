//! Request paths the way the real upstream builds them, and the way an API server routes them.
//!
//! The open-source EKS MCP server calls the kubernetes Python dynamic client, which formats
//! `name` and `namespace` into the URL without escaping (`Resource.path`); urllib3 2.x then
//! drops a fragment and resolves `.` and `..` segments (RFC 3986 section 5.2.4) before the
//! request leaves. The API server routes what arrives. So `namespace: "payments-x/../kube-system"`
//! lists `kube-system`, and `name: "../../../namespaces/kube-system"` on a ConfigMap delete
//! deletes a namespace. The tool handlers go through [`World::route`] so the simulator acts on
//! the object the real one would, and a gateway that reads a name differently is caught.

use super::world::{ApiResource, K8sError, World};

/// The object (or collection) a request path addresses on the API server.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub res: ApiResource,
    /// The namespace segment, when the path has one.
    pub namespace: Option<String>,
    /// The object name; `None` addresses the collection.
    pub name: Option<String>,
}

/// The path `Resource.path(name, namespace)` of the dynamic client builds: the namespace only
/// for namespaced resources, the name when given, both unescaped.
pub(crate) fn resource_path(
    res: &ApiResource,
    name: Option<&str>,
    namespace: Option<&str>,
) -> String {
    let prefix = match res.api_version.split_once('/') {
        Some(_) => format!("/apis/{}", res.api_version),
        None => format!("/api/{}", res.api_version),
    };
    let mut path = prefix;
    if let Some(ns) = namespace.filter(|ns| res.namespaced && !ns.is_empty()) {
        path.push_str("/namespaces/");
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(&res.plural);
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// What urllib3 sends for `path`: the fragment dropped, the query left out (it never names a
/// resource), and dot segments removed.
pub(crate) fn normalise(path: &str) -> String {
    let path = path.split('#').next().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves a trailing slash.
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

impl World {
    /// Route a request path (after [`normalise`]) as the API server does. Paths that name no
    /// resource of this server are 404, like the real one's "could not find the requested
    /// resource".
    pub(crate) fn route(&self, path: &str) -> Result<Route, K8sError> {
        let missing = || {
            K8sError::not_found(format!(
                "the server could not find the requested resource (path {path})"
            ))
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(missing());
        }
        let (api_version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => (version.to_string(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return Err(missing()),
        };
        let find = |plural: &str| {
            self.api_resources
                .iter()
                .find(|r| r.api_version == api_version && r.plural == plural)
                .cloned()
                .ok_or_else(missing)
        };
        let core = !api_version.contains('/');
        match rest {
            ["namespaces", ns, plural, name @ ..] if name.len() <= 1 => {
                let res = find(plural)?;
                if !res.namespaced {
                    return Err(missing());
                }
                Ok(Route {
                    res,
                    namespace: Some(ns.to_string()),
                    name: name.first().map(|n| n.to_string()),
                })
            }
            [plural, name @ ..] if name.len() <= 1 && (core || *plural != "namespaces") => {
                let res = find(plural)?;
                // A namespaced resource is only listed (never read) without a namespace.
                if res.namespaced && !name.is_empty() {
                    return Err(missing());
                }
                Ok(Route {
                    res,
                    namespace: None,
                    name: name.first().map(|n| n.to_string()),
                })
            }
            _ => Err(missing()),
        }
    }

    /// Route the request the dynamic client makes for `(res, name, namespace)`.
    pub(crate) fn route_request(
        &self,
        res: &ApiResource,
        name: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Route, K8sError> {
        self.route(&normalise(&resource_path(res, name, namespace)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_like_urllib3() {
        // Expected values printed by urllib3 2.8 `parse_url(...).request_uri`.
        for (given, sent) in [
            (
                "/api/v1/namespaces/payments-x/../kube-system/secrets",
                "/api/v1/namespaces/kube-system/secrets",
            ),
            (
                "/api/v1/namespaces/web/configmaps/../../../namespaces/kube-system",
                "/api/v1/namespaces/kube-system",
            ),
            (
                "/api/v1/namespaces/payments-x/../../secrets",
                "/api/v1/secrets",
            ),
            (
                "/api/v1/namespaces/a/configmaps/x/..",
                "/api/v1/namespaces/a/configmaps/",
            ),
            (
                "/api/v1/namespaces/a/configmaps/..",
                "/api/v1/namespaces/a/",
            ),
            (
                "/api/v1/namespaces/a/./b/c?x=1#f",
                "/api/v1/namespaces/a/b/c",
            ),
        ] {
            assert_eq!(normalise(given), sent, "{given}");
        }
    }

    #[test]
    fn routes_name_the_object_the_api_server_acts_on() {
        let world = World::sample();
        let secrets = world.resolve("v1", "Secret").unwrap().clone();
        let cm = world.resolve("v1", "ConfigMap").unwrap().clone();
        let r = world
            .route_request(&secrets, None, Some("payments-x/../kube-system"))
            .unwrap();
        assert_eq!(
            (r.res.kind.as_str(), r.namespace.as_deref()),
            ("Secret", Some("kube-system"))
        );
        let r = world
            .route_request(&cm, Some("../../../namespaces/kube-system"), Some("web"))
            .unwrap();
        assert_eq!(
            (r.res.kind.as_str(), r.namespace, r.name.as_deref()),
            ("Namespace", None, Some("kube-system"))
        );
        let r = world
            .route_request(&secrets, None, Some("payments-x/../.."))
            .unwrap();
        assert_eq!((r.res.kind.as_str(), r.namespace), ("Secret", None));
        assert!(world.route_request(&cm, Some(".."), Some("a")).is_err());
        let deploy = world.resolve("apps/v1", "Deployment").unwrap().clone();
        let r = world
            .route_request(&deploy, Some("web"), Some("payments"))
            .unwrap();
        assert_eq!(r.name.as_deref(), Some("web"));
    }
}
