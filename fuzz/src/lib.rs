//! What the fuzz targets share: the shipped tool catalogue and redaction policy, built once,
//! and a small reader that turns the fuzzer's bytes into choices.
use std::path::Path;
use std::sync::OnceLock;

use eks_mcp_gateway::classify::Catalogue;
use eks_mcp_gateway::redact::Redactor;

/// `policies/catalogue.yaml` as shipped.
pub fn catalogue() -> &'static Catalogue {
    static CAT: OnceLock<Catalogue> = OnceLock::new();
    CAT.get_or_init(|| {
        Catalogue::from_yaml_str(
            include_str!("../../policies/catalogue.yaml"),
            Path::new("policies/catalogue.yaml"),
        )
        .expect("the shipped catalogue loads")
    })
}

/// The shipped redaction policy (`policies/redaction.yaml`).
pub fn redactor() -> &'static Redactor {
    static RED: OnceLock<Redactor> = OnceLock::new();
    RED.get_or_init(Redactor::builtin)
}

/// The redaction profiles a decision may name: none (only `always_apply`), one of the
/// shipped profiles, or all of them; picked by `choice`.
pub fn profiles(choice: u8) -> Vec<String> {
    let names = redactor().profile_names();
    match choice as usize % (names.len() + 2) {
        0 => Vec::new(),
        1 => names,
        i => vec![names[i - 2].clone()],
    }
}

/// Reads choices from the front of the fuzzer's input; what is left is the payload.
/// An exhausted reader answers 0, so every input means something.
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes }
    }

    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    /// A choice in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// The next `len` bytes (fewer at the end).
    pub fn take(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

/// Whether the redaction targets assert idempotence. `FUZZ_IDEMPOTENCE=off` turns that one
/// check off (the bounded run of scripts/test does, while the non-idempotent inputs listed
/// in docs/fuzzing.md are open); every other invariant is always checked.
pub fn idempotence_checked() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FUZZ_IDEMPOTENCE").as_deref() != Ok("off"))
}
