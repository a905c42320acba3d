//! The built-in detectors: their stable names (used in policy data, in the replacement text
//! `[REDACTED:<name>]`, in audit records and in metrics labels) and what each one finds.
//!
//! The order of `BUILTIN` is the detector id; extra patterns from `redaction.yaml` get ids after
//! the built-ins. Renaming a detector is an interface change: policies and dashboards use names.

/// A detector id: an index into the redactor's name table (built-ins first, then extra patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Det(pub u8);

/// Built-in detectors, `(name, what it finds)`.
pub(crate) const BUILTIN: &[(&str, &str)] = &[
    (
        "k8s_secret_data",
        "data and stringData values of Kubernetes Secret objects (single reads, lists, manifests)",
    ),
    (
        "k8s_secret_last_applied",
        "the kubectl.kubernetes.io/last-applied-configuration annotation of Secrets",
    ),
    (
        "sensitive_env_value",
        "env[].value of containers when env[].name names a credential (DB_PASSWORD, API_KEY, ...)",
    ),
    (
        "credential_assignment",
        "values assigned to credential-named keys: password=, token:, \"secret\": ..., --password x",
    ),
    (
        "kubeconfig_credential",
        "kubeconfig client-key-data, client-certificate-data and users[].user token/password",
    ),
    (
        "docker_config",
        "docker config JSON auths.*.auth/password/identitytoken, base64 .dockerconfigjson",
    ),
    ("aws_access_key_id", "AWS access key ids (AKIA..., ASIA...)"),
    (
        "aws_secret_access_key",
        "AWS secret access keys (by key name, or the 40-char key next to an access key id)",
    ),
    (
        "aws_session_token",
        "AWS STS session tokens (IQoJb3JpZ2lu..., FwoGZXIvYXdz...)",
    ),
    ("private_key", "PEM private key blocks, BEGIN to END"),
    (
        "jwt",
        "JSON Web Tokens (three base64url segments starting eyJ), incl. service-account tokens",
    ),
    ("bearer_token", "the token after 'Bearer '"),
    ("basic_auth", "the base64 user:password after 'Basic '"),
    (
        "connection_string_password",
        "the password in scheme://user:password@host URLs, a token as the whole userinfo, Azure SAS sig=",
    ),
    (
        "github_token",
        "GitHub tokens ghp_/gho_/ghu_/ghs_/ghr_ and github_pat_",
    ),
    ("gitlab_token", "GitLab personal access tokens glpat-"),
    (
        "slack_token",
        "Slack tokens xoxb-/xoxp-/xoxa-/xoxr-/xoxs-/xoxe-",
    ),
    ("slack_webhook", "Slack incoming webhook URLs"),
    (
        "stripe_key",
        "Stripe secret/restricted keys and webhook secrets",
    ),
    ("google_api_key", "Google API keys AIza..."),
    ("npm_token", "npm access tokens npm_..."),
    ("pypi_token", "PyPI upload tokens pypi-AgE..."),
    ("sendgrid_key", "SendGrid API keys SG.x.y"),
    (
        "openai_api_key",
        "OpenAI API keys sk-proj-/sk-svcacct-/sk-...",
    ),
    ("anthropic_api_key", "Anthropic API keys sk-ant-..."),
    ("vault_token", "HashiCorp Vault tokens hvs./hvb."),
    (
        "docker_hub_token",
        "Docker Hub personal access tokens dckr_pat_",
    ),
    (
        "encoded_payload",
        "gzip+base64 payloads (Helm release data, H4sI...) that hold a secret or cannot be read within bounds: withheld whole",
    ),
];

macro_rules! ids {
    ($($name:ident = $i:expr),* $(,)?) => { $(pub(crate) const $name: Det = Det($i);)* };
}
ids! {
    K8S_SECRET_DATA = 0, K8S_SECRET_LAST_APPLIED = 1, SENSITIVE_ENV_VALUE = 2,
    CREDENTIAL_ASSIGNMENT = 3, KUBECONFIG_CREDENTIAL = 4, DOCKER_CONFIG = 5,
    AWS_ACCESS_KEY_ID = 6, AWS_SECRET_ACCESS_KEY = 7, AWS_SESSION_TOKEN = 8,
    PRIVATE_KEY = 9, JWT = 10, BEARER_TOKEN = 11, BASIC_AUTH = 12,
    CONNECTION_STRING_PASSWORD = 13, GITHUB_TOKEN = 14, GITLAB_TOKEN = 15, SLACK_TOKEN = 16,
    SLACK_WEBHOOK = 17, STRIPE_KEY = 18, GOOGLE_API_KEY = 19, NPM_TOKEN = 20, PYPI_TOKEN = 21,
    SENDGRID_KEY = 22, OPENAI_API_KEY = 23, ANTHROPIC_API_KEY = 24, VAULT_TOKEN = 25,
    DOCKER_HUB_TOKEN = 26, ENCODED_PAYLOAD = 27,
}

/// Most detectors a redactor can hold (built-ins plus extra patterns): one bit each.
pub(crate) const MAX_DETECTORS: usize = 128;

/// A set of detectors, one bit per id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DetectorSet(pub u128);

impl DetectorSet {
    pub(crate) fn has(self, d: Det) -> bool {
        self.0 & (1u128 << d.0) != 0
    }
    pub(crate) fn insert(&mut self, d: Det) {
        self.0 |= 1u128 << d.0;
    }
    pub(crate) fn union(self, o: DetectorSet) -> DetectorSet {
        DetectorSet(self.0 | o.0)
    }
    pub(crate) fn intersect(self, o: DetectorSet) -> DetectorSet {
        DetectorSet(self.0 & o.0)
    }
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_table() {
        let by_name = |n: &str| BUILTIN.iter().position(|(x, _)| *x == n).unwrap() as u8;
        assert_eq!(K8S_SECRET_DATA.0, by_name("k8s_secret_data"));
        assert_eq!(
            CONNECTION_STRING_PASSWORD.0,
            by_name("connection_string_password")
        );
        assert_eq!(AWS_SESSION_TOKEN.0, by_name("aws_session_token"));
        assert_eq!(DOCKER_HUB_TOKEN.0, by_name("docker_hub_token"));
        assert_eq!(ENCODED_PAYLOAD.0 as usize, BUILTIN.len() - 1);
        assert!(BUILTIN.len() < MAX_DETECTORS);
    }
}
