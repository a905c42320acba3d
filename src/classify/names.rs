//! Kubernetes' own rules for the names a call carries, checked before any policy sees them.
//!
//! The upstream (the kubernetes Python dynamic client) formats `name` and `namespace` into the
//! request URL without escaping them, and urllib3 then resolves `.` and `..` segments, so
//! `namespace: "payments-x/../kube-system"` is a request in `kube-system` while a glob such as
//! `payments-*` matches the text. A name the API server would never accept is therefore not a
//! name to reason about: each check here returns why a value is not a valid Kubernetes name,
//! and classify records that as a parse error (the shipped policy denies it).
//!
//! The rules are the API server's (apimachinery `validation`): a namespace is a DNS-1123 label;
//! an object name is at least a valid path segment (never `.` or `..`, no `/` or `%`), and the
//! gateway also refuses what changes a URL's meaning or hides in logs (`?`, `#`, `\`,
//! whitespace, control and non-ASCII characters) and anything over 253 bytes. A kind is a
//! Go type name (CRDs: a DNS-1035 label once lowercased); an api version is `version` or
//! `group/version` with a DNS-1123 subdomain group and a DNS-1035 label version. An EKS
//! cluster name is what the EKS API accepts (letters, digits, `-`, `_`, at most 100).

/// Longest object name the API server accepts (DNS-1123 subdomain).
const MAX_NAME: usize = 253;
/// Longest namespace, kind and version (DNS labels).
const MAX_LABEL: usize = 63;
/// Longest EKS cluster name.
const MAX_CLUSTER: usize = 100;

/// Why `value` is not a Kubernetes namespace name, or `None` when it is one.
pub fn namespace_problem(value: &str) -> Option<&'static str> {
    dns1123_label_problem(value)
}

/// Why `value` is not a Kubernetes object name, or `None` when it is one.
pub fn object_name_problem(value: &str) -> Option<&'static str> {
    if value.len() > MAX_NAME {
        return Some("is longer than 253 characters");
    }
    if value == "." || value == ".." {
        return Some("is a relative path segment (`.` or `..`)");
    }
    for c in value.chars() {
        let problem = match c {
            '/' | '\\' => "contains a path separator",
            '%' => "contains `%` (a percent-encoding)",
            '?' | '#' => "contains `?` or `#`, which end a URL path",
            c if c.is_whitespace() => "contains whitespace",
            c if c.is_control() => "contains a control character",
            c if !c.is_ascii() => "contains a non-ASCII character",
            _ => continue,
        };
        return Some(problem);
    }
    None
}

/// Why `value` is not a Kubernetes kind, or `None` when it is one.
pub fn kind_problem(value: &str) -> Option<&'static str> {
    if value.len() > MAX_LABEL {
        return Some("is longer than 63 characters");
    }
    let bytes = value.as_bytes();
    if !bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        return Some("does not start with a letter");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        || value.ends_with('-')
    {
        return Some("is not a type name (letters, digits and inner `-` only)");
    }
    None
}

/// Why `value` is not a Kubernetes api version (`v1`, `apps/v1`), or `None` when it is one.
pub fn api_version_problem(value: &str) -> Option<&'static str> {
    let (group, version) = match value.split_once('/') {
        Some((group, version)) => (Some(group), version),
        None => (None, value),
    };
    if let Some(group) = group
        && dns1123_subdomain_problem(group).is_some()
    {
        return Some("has a group that is not a DNS subdomain (one `/` at most)");
    }
    if dns1035_label_problem(version).is_some() {
        return Some("has a version that is not a DNS-1035 label (such as v1 or v1beta1)");
    }
    None
}

/// Why `value` is not an EKS cluster name, or `None` when it is one.
pub fn cluster_problem(value: &str) -> Option<&'static str> {
    if value.len() > MAX_CLUSTER {
        return Some("is longer than 100 characters");
    }
    if !value
        .as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
    {
        return Some("does not start with a letter or digit");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Some("contains characters other than letters, digits, `-` and `_`");
    }
    None
}

fn dns1123_label_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > MAX_LABEL {
        return Some("is not 1 to 63 characters long");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("is not a DNS-1123 label (lowercase letters, digits and `-` only)");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Some("starts or ends with `-`");
    }
    None
}

fn dns1035_label_problem(value: &str) -> Option<&'static str> {
    if !value.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
        return Some("does not start with a lowercase letter");
    }
    dns1123_label_problem(value)
}

fn dns1123_subdomain_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Some("is not 1 to 253 characters long");
    }
    value.split('.').find_map(dns1123_label_problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_dns_labels() {
        for ok in ["payments", "payments-x", "a", "0abc", &"a".repeat(63)] {
            assert_eq!(namespace_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "payments-x/../kube-system",
            "payments-x/../..",
            "..",
            "Payments",
            "-a",
            "a-",
            "a.b",
            "a b",
            "a%2f",
            &"a".repeat(64),
        ] {
            assert!(namespace_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn object_names_are_path_segments_without_url_syntax() {
        for ok in [
            "web",
            "web.example.com",
            "system:controller:job-controller",
            "a..b",
            "UPPER_case",
        ] {
            assert_eq!(object_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "../../../namespaces/kube-system",
            "..",
            ".",
            "a/b",
            "a\\b",
            "a%2F..",
            "x?dryRun=All",
            "x#frag",
            "a b",
            "a\tb",
            "a\u{0}",
            "caf\u{e9}",
            &"a".repeat(254),
        ] {
            assert!(object_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_and_api_versions_have_no_path_segments() {
        for ok in ["Secret", "secrets", "ClusterRoleBinding", "Ingress-Route"] {
            assert_eq!(kind_problem(ok), None, "{ok}");
        }
        for bad in ["", "Secret/..", "../Secret", "Se cret", "1Pod", "Pod-"] {
            assert!(kind_problem(bad).is_some(), "{bad:?}");
        }
        for ok in [
            "v1",
            "apps/v1",
            "rbac.authorization.k8s.io/v1",
            "karpenter.sh/v1beta1",
        ] {
            assert_eq!(api_version_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "v1/..",
            "apps/../v1",
            "../v1",
            "apps/v1/x",
            "apps/V1",
            "apps/1v",
            "/v1",
            "apps/",
        ] {
            assert!(api_version_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn cluster_names_follow_eks() {
        for ok in ["dev", "prod-eu_1", "0cluster"] {
            assert_eq!(cluster_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "dev/../prod",
            "dev prod",
            "-dev",
            "dév",
            &"a".repeat(101),
        ] {
            assert!(cluster_problem(bad).is_some(), "{bad:?}");
        }
    }
}
