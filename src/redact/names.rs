//! Does a name (a JSON key, an environment variable name, the key of a `key=value` pair in a
//! log line) name a credential? One classifier serves all three so that `DB_PASSWORD` in an env
//! list, `"dbPassword"` in a JSON config and `db.password=` in a log line agree.
//!
//! The name is split into lower-case words (`_ - . /` separators and camelCase boundaries).
//! It names a credential when a word is or ends with a credential stem (`password`, `secret`,
//! `token`, `apikey`, ...), or is `key` qualified by a word before it (`API_KEY`, `SIGNING_KEY`,
//! but not a bare `key` as in tolerations and label selectors) — unless the LAST word says the
//! value is about the credential rather than the credential itself (`TOKEN_TTL`,
//! `PASSWORD_MIN_LENGTH`, `KEY_ID_LENGTH`, `secretName`, `secretKeyRef`, `TOKEN_URL`), or the
//! name is a known non-secret (`nextToken` pagination, `progressToken`, shell `PWD`).
//! AWS names map to their own detectors so the replacement says what was removed.
use std::sync::OnceLock;

use super::detectors::{
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, CREDENTIAL_ASSIGNMENT, Det,
    KUBECONFIG_CREDENTIAL,
};

/// Words a credential-bearing word may end with (`dbpassword`, `clientsecret`, `authtoken`).
const STEMS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
    "pwd",
    "apikey",
    "privatekey",
    "secretkey",
    "accesskey",
    "signingkey",
    "encryptionkey",
    "masterkey",
    "authkey",
    "sshkey",
    "hmackey",
    "licensekey",
    "authorization",
    "cookie",
];

/// Last words that make the value metadata about a credential, not the credential.
const NON_SECRET_LAST: &[&str] = &[
    "name",
    "names",
    "id",
    "ids",
    "file",
    "files",
    "path",
    "paths",
    "dir",
    "directory",
    "length",
    "len",
    "size",
    "ttl",
    "expiry",
    "expires",
    "expiration",
    "timeout",
    "seconds",
    "secs",
    "sec",
    "ms",
    "millis",
    "minutes",
    "mins",
    "hours",
    "days",
    "count",
    "enabled",
    "disabled",
    "enable",
    "disable",
    "type",
    "types",
    "mode",
    "ref",
    "refs",
    "url",
    "uri",
    "urls",
    "endpoint",
    "host",
    "port",
    "header",
    "version",
    "rotation",
    "limit",
    "min",
    "max",
    "format",
    "algorithm",
    "alg",
    "policy",
    "hint",
    "kind",
    "provider",
    "location",
    "field",
    "arn",
    "region",
    "bucket",
    "status",
    "required",
    "store",
    "manager",
    "namespace",
    "selector",
    "regex",
    "pattern",
    "validation",
    "rule",
    "rules",
    "at",
    "issuer",
    "audience",
    "scope",
    "scopes",
    "lifetime",
    "duration",
    "interval",
    "source",
    "label",
    "template",
    "class",
    "volume",
    "mount",
    "index",
    "strength",
    "retries",
    "reason",
    "message",
    "error",
    "valid",
    "invalid",
    "exists",
    "set",
    "configured",
    "present",
    "missing",
    "generated",
    "usage",
    "used",
    "expired",
    "hash",
    "fingerprint",
    "digest",
    "sha",
    "sha256",
    "checksum",
    // Source and config file names (`secret_controller.go:88]`, `token_cache.py:12`).
    "go",
    "py",
    "java",
    "rs",
    "js",
    "ts",
    "rb",
    "kt",
    "scala",
    "php",
    "cs",
    "cc",
    "cpp",
    "log",
    "sh",
    "html",
    "md",
];
// Not here: `txt`, `json`, `yaml`, `ini`, `pem` and other data-file extensions. A data key
// such as `password.txt` or `credentials.json` in a Secret or ConfigMap holds what it names.

/// Words before a final `key` that make it a non-secret key (`PARTITION_KEY`, `SORT_KEY`).
const NON_SECRET_KEY_QUALIFIERS: &[&str] = &[
    "public",
    "partition",
    "sort",
    "primary",
    "routing",
    "cache",
    "idempotency",
    "foreign",
    "hash",
    "object",
    "s3",
    "label",
    "map",
    "node",
    "range",
    "lookup",
    "shard",
    "row",
    "column",
    "dedup",
    "dedupe",
    "composite",
    "unique",
    "group",
    "message",
    "metric",
    "tag",
    "dict",
    "annotation",
    "match",
    "sticky",
    "affinity",
    "topology",
    "config",
    "registry",
    "translation",
    "i18n",
    "sequence",
    "request",
    "parameter",
    "output",
    "input",
    "attribute",
    "field",
    "property",
    "resource",
    "state",
    "header",
    "item",
    "entry",
    "file",
    "lock",
    "search",
    "join",
    "lookup_table",
];

/// Whole names (words joined) that are never credentials.
const NON_SECRET_NAMES: &[&str] = &[
    "pwd",
    "oldpwd",
    "nexttoken",
    "continuetoken",
    "continuationtoken",
    "pagetoken",
    "nextpagetoken",
    "paginationtoken",
    "progresstoken",
    "synctoken",
    "resumetoken",
    "cancellationtoken",
    "ec2sshkey",
    "publickey",
    "tokenizer",
    "maxtokens",
    "secretkeyref",
];

#[cfg(test)]
/// Split a name into lower-case words: separators are any non-alphanumeric byte, and camelCase
/// boundaries (`dbPassword`, `HTTPToken`, `ec2SshKey`).
pub(crate) fn split_words(name: &str) -> Vec<String> {
    let b = name.as_bytes();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in b.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_ascii_uppercase() && !cur.is_empty() {
            let prev = b[i - 1];
            let next_lower = b.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c.to_ascii_lowercase() as char);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The longest name [`classify`] looks at; longer ones are not credential names.
const MAX_NAME: usize = 160;

/// The words of a name (separators are any non-alphanumeric byte, and camelCase boundaries:
/// `dbPassword`, `HTTPToken`, `ec2SshKey`), without allocating: the lower-cased
/// words are stored back to back (which is also their concatenation) with their end offsets.
struct Words {
    buf: [u8; MAX_NAME],
    ends: [u8; MAX_NAME],
    n: usize,
}

impl Words {
    /// `None` when `name` is longer than [`MAX_NAME`].
    fn split(name: &str) -> Option<Words> {
        let b = name.as_bytes();
        if b.len() > MAX_NAME {
            return None;
        }
        let mut w = Words {
            buf: [0; MAX_NAME],
            ends: [0; MAX_NAME],
            n: 0,
        };
        let mut len = 0usize;
        let mut cur_start = 0usize;
        for (i, &c) in b.iter().enumerate() {
            if !c.is_ascii_alphanumeric() {
                if len > cur_start {
                    w.ends[w.n] = len as u8;
                    w.n += 1;
                    cur_start = len;
                }
                continue;
            }
            if c.is_ascii_uppercase() && len > cur_start {
                let prev = b[i - 1];
                let next_lower = b.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
                if prev.is_ascii_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_ascii_uppercase() && next_lower)
                {
                    w.ends[w.n] = len as u8;
                    w.n += 1;
                    cur_start = len;
                }
            }
            w.buf[len] = c.to_ascii_lowercase();
            len += 1;
        }
        if len > cur_start {
            w.ends[w.n] = len as u8;
            w.n += 1;
        }
        Some(w)
    }

    fn word(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    /// All words joined, lower case.
    fn joined(&self) -> &[u8] {
        let len = if self.n == 0 {
            0
        } else {
            self.ends[self.n - 1] as usize
        };
        &self.buf[..len]
    }
}

/// A word list indexed by word length, made on first use: `classify` runs for most keys of
/// every relayed result, and a linear scan of the ~150 `NON_SECRET_LAST` words was most of
/// its cost. Only words of the same length are compared, first byte first.
struct WordList {
    words: &'static [&'static str],
    by_len: OnceLock<Vec<Vec<&'static [u8]>>>,
}

impl WordList {
    const fn new(words: &'static [&'static str]) -> WordList {
        WordList {
            words,
            by_len: OnceLock::new(),
        }
    }

    fn contains(&self, word: &[u8]) -> bool {
        let by_len = self.by_len.get_or_init(|| {
            let longest = self.words.iter().map(|w| w.len()).max().unwrap_or(0);
            let mut v = vec![Vec::new(); longest + 1];
            for w in self.words {
                v[w.len()].push(w.as_bytes());
            }
            v
        });
        let Some(same_len) = by_len.get(word.len()) else {
            return false;
        };
        match word.first() {
            None => !same_len.is_empty(),
            Some(first) => same_len.iter().any(|w| w[0] == *first && *w == word),
        }
    }
}

static NON_SECRET_LAST_WORDS: WordList = WordList::new(NON_SECRET_LAST);
static NON_SECRET_KEY_QUALIFIER_WORDS: WordList = WordList::new(NON_SECRET_KEY_QUALIFIERS);
static NON_SECRET_NAME_WORDS: WordList = WordList::new(NON_SECRET_NAMES);

/// The detector responsible for a value stored under `name`, or `None` when the name does not
/// name a credential. (Runs for most keys of every result the gateway relays, so it works on
/// the stack: no allocation.)
pub(crate) fn classify(name: &str) -> Option<Det> {
    if name.len() > MAX_NAME {
        return None;
    }
    // Domain-prefixed keys (`authorization.k8s.io/decision`, `vault.hashicorp.com/role`): the
    // prefix is a namespace, the part after the last `/` is the name.
    let name = name.rsplit('/').next().unwrap_or(name);
    let words = Words::split(name)?;
    if words.n == 0 {
        return None;
    }
    let last = words.word(words.n - 1);
    let joined = words.joined();
    if NON_SECRET_NAME_WORDS.contains(joined) {
        return None;
    }
    if joined.ends_with(b"secretaccesskey") || joined == b"awssecretkey" {
        return Some(AWS_SECRET_ACCESS_KEY);
    }
    if joined.ends_with(b"sessiontoken") || joined.ends_with(b"securitytoken") {
        return Some(AWS_SESSION_TOKEN);
    }
    if joined.ends_with(b"accesskeyid") {
        return Some(AWS_ACCESS_KEY_ID);
    }
    if joined == b"clientkeydata" || joined == b"clientcertificatedata" {
        return Some(KUBECONFIG_CREDENTIAL);
    }
    if NON_SECRET_LAST_WORDS.contains(last) || (0..words.n).any(|i| words.word(i) == b"public") {
        return None;
    }
    // `BASIC_AUTH`, `.npmrc` `_auth`, `HTTP_AUTH`: the last word is (or ends with) `auth`.
    if last.ends_with(b"auth") && last != b"oauth" {
        return Some(CREDENTIAL_ASSIGNMENT);
    }
    for i in 0..words.n {
        let w = words.word(i);
        if w == b"pass" || w == b"pw" {
            return Some(CREDENTIAL_ASSIGNMENT);
        }
        if w == b"key" {
            if i > 0 && !NON_SECRET_KEY_QUALIFIER_WORDS.contains(words.word(i - 1)) {
                return Some(CREDENTIAL_ASSIGNMENT);
            }
            continue;
        }
        if w != b"oldpwd" && STEMS.iter().any(|s| w.ends_with(s.as_bytes())) {
            return Some(CREDENTIAL_ASSIGNMENT);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_snake_kebab_dotted_and_camel_case() {
        assert_eq!(split_words("DB_PASSWORD"), ["db", "password"]);
        assert_eq!(split_words("client-key-data"), ["client", "key", "data"]);
        assert_eq!(
            split_words("spring.datasource.password"),
            ["spring", "datasource", "password"]
        );
        assert_eq!(split_words("dbPassword"), ["db", "password"]);
        assert_eq!(split_words("HTTPToken"), ["http", "token"]);
        assert_eq!(split_words("ec2SshKey"), ["ec2", "ssh", "key"]);
        assert_eq!(split_words("--password"), ["password"]);
    }

    #[test]
    fn word_lists_find_exactly_their_words() {
        for (set, list) in [
            (&NON_SECRET_LAST_WORDS, NON_SECRET_LAST),
            (&NON_SECRET_KEY_QUALIFIER_WORDS, NON_SECRET_KEY_QUALIFIERS),
            (&NON_SECRET_NAME_WORDS, NON_SECRET_NAMES),
        ] {
            for w in list {
                assert!(set.contains(w.as_bytes()), "{w}");
                let longer = format!("{w}x");
                assert_eq!(
                    set.contains(longer.as_bytes()),
                    list.contains(&longer.as_str()),
                    "{longer}"
                );
                assert_eq!(
                    set.contains(&w.as_bytes()[1..]),
                    list.contains(&&w[1..]),
                    "{w}"
                );
            }
            for w in ["", "password", "token", "zzz", "a"] {
                assert_eq!(set.contains(w.as_bytes()), list.contains(&w), "{w}");
            }
        }
    }

    #[test]
    fn the_stack_splitter_finds_the_same_words() {
        for n in [
            "DB_PASSWORD",
            "client-key-data",
            "spring.datasource.password",
            "dbPassword",
            "HTTPToken",
            "ec2SshKey",
            "--password",
            "",
            "___",
            "a",
            "ABCdefGHI9jK",
            "x-amz-security-token",
        ] {
            let w = Words::split(n).unwrap();
            let got: Vec<String> = (0..w.n)
                .map(|i| String::from_utf8(w.word(i).to_vec()).unwrap())
                .collect();
            assert_eq!(got, split_words(n), "{n}");
            assert_eq!(w.joined(), split_words(n).concat().as_bytes(), "{n}");
        }
        assert!(Words::split(&"a".repeat(MAX_NAME + 1)).is_none());
    }

    #[test]
    fn credential_names() {
        for n in [
            "DB_PASSWORD",
            "PGPASSWORD",
            "password",
            "DB_PASS",
            "db_pwd",
            "API_KEY",
            "apiKey",
            "STRIPE_SECRET",
            "client_secret",
            "GITHUB_TOKEN",
            "access_token",
            "X-Auth-Token",
            "Authorization",
            "ENCRYPTION_KEY",
            "signing.key",
            "tls.key",
            "private_key",
            "SSH_PRIVATE_KEY",
            "credentials",
            "passwordHash2",
            "MYSQL_ROOT_PASSWORD",
            "JWT_SECRET",
            "passphrase",
            "DB_PW",
            "BASIC_AUTH",
            "_auth",
            "password.txt",
            "credentials.json",
            "spring.security.oauth2.client.registration.keycloak.client-secret",
        ] {
            assert_eq!(classify(n), Some(CREDENTIAL_ASSIGNMENT), "{n}");
        }
    }

    #[test]
    fn aws_and_kubeconfig_names_get_their_own_detector() {
        assert_eq!(
            classify("aws_secret_access_key"),
            Some(AWS_SECRET_ACCESS_KEY)
        );
        assert_eq!(classify("SecretAccessKey"), Some(AWS_SECRET_ACCESS_KEY));
        assert_eq!(classify("AWS_SESSION_TOKEN"), Some(AWS_SESSION_TOKEN));
        assert_eq!(classify("X-Amz-Security-Token"), Some(AWS_SESSION_TOKEN));
        assert_eq!(classify("AccessKeyId"), Some(AWS_ACCESS_KEY_ID));
        assert_eq!(classify("client-key-data"), Some(KUBECONFIG_CREDENTIAL));
        assert_eq!(
            classify("client-certificate-data"),
            Some(KUBECONFIG_CREDENTIAL)
        );
    }

    #[test]
    fn names_about_credentials_are_not_credentials() {
        for n in [
            "KEY_ID_LENGTH",
            "TOKEN_TTL",
            "PASSWORD_MIN_LENGTH",
            "token_expiry_seconds",
            "secretName",
            "secretKeyRef",
            "TOKEN_URL",
            "PASSWORD_FILE",
            "nextToken",
            "NextToken",
            "progressToken",
            "PWD",
            "OLDPWD",
            "key",
            "keyId",
            "PUBLIC_KEY",
            "partition_key",
            "ec2SshKey",
            "keyArn",
            "max_tokens",
            "tokenizer",
            "secret_arn",
            "automountServiceAccountToken_enabled",
            "KEYCLOAK_URL",
            "monkey",
            "bypass",
            "token_created_at",
            "authorization.k8s.io/decision",
            "secrets-store.csi.k8s.io/used",
            "secret_controller.go",
            "ParameterKey",
            "OutputKey",
            "oauth",
            "AUTH_URL",
            "auth_type",
            "author",
        ] {
            assert_eq!(classify(n), None, "{n}");
        }
    }
}
