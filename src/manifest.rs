//! manifest: the bounds a YAML manifest must fit before the YAML parser builds it.
//!
//! A manifest (`apply_yaml.yaml_content`) costs more to parse than its size suggests, and a
//! caller controls it:
//! - libyaml's scanner does work proportional to the depth of flow collections for every
//!   token, so `x: [[[[…` is quadratic (150 KB held a worker for over a minute);
//! - the YAML loader keeps every event of a document in memory before building it (about
//!   130 bytes per value: a 4 MiB document of `[a,a,…]` took 480 MB);
//! - aliases expand: `*a` is a full copy of the anchored node, so 20 KB of aliases to a
//!   1,000-element anchor became a gigabyte of values.
//!
//! [`check`] measures all three in linear time before the parser runs: a scan bounds the flow
//! nesting and the number of values from above, and when the text can hold aliases, a counting
//! pass walks the documents (aliases followed, nothing kept) and stops at the value budget.
//! The classify stage turns a refusal into a `parse_error` fact, which the policy denies.
//!
//! The scan must never see less nesting than libyaml will. It cannot know for certain where
//! a quoted scalar, a comment or a block scalar begins without being libyaml, so it follows
//! every reading libyaml could take at once: a small nondeterministic automaton whose states
//! each carry the set of depths reachable in them (a bit set). Where the reading is certain
//! (inside a quoted scalar, at the start of a token) it takes the one path libyaml takes;
//! where it is not (does a plain scalar end at this line break? does this block scalar end
//! here?) it takes both. The depth it reports is the largest over all readings, so the
//! reading libyaml takes is always among them.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

/// The largest flow nesting the scan can represent (one bit per depth in a `u128`).
pub const MAX_SUPPORTED_DEPTH: usize = 120;

/// What one manifest argument may hold (`limits.max_manifest_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestLimits {
    /// Deepest nesting of flow collections (`[…]`, `{…}`).
    pub max_depth: usize,
    /// Most YAML documents in one manifest.
    pub max_documents: usize,
    /// Most YAML values (scalars, sequences, mappings), aliases expanded.
    pub max_values: usize,
    /// Most Kubernetes objects one call may name (documents and `List` items together).
    pub max_objects: usize,
}

impl Default for ManifestLimits {
    fn default() -> Self {
        ManifestLimits {
            max_depth: 100,
            max_documents: 500,
            max_values: 500_000,
            max_objects: 1_000,
        }
    }
}

/// Why a manifest is refused before parsing. The message names the config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded(pub String);

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Check that `text` fits `limits` before it is parsed. Linear in the length of `text`.
///
/// `Ok` does not mean the text is valid YAML: syntax errors are left to the parser, which
/// reaches them within the same bounds.
pub fn check(text: &str, limits: &ManifestLimits) -> Result<(), LimitExceeded> {
    let shape = scan(text, limits.max_depth.min(MAX_SUPPORTED_DEPTH))?;
    if shape.documents > limits.max_documents {
        return Err(LimitExceeded(format!(
            "holds more than {} YAML documents (limits.max_manifest_documents)",
            limits.max_documents
        )));
    }
    if shape.values > limits.max_values {
        return Err(LimitExceeded(format!(
            "holds more than {} YAML values (limits.max_manifest_values)",
            limits.max_values
        )));
    }
    if shape.aliases {
        count_expanded_values(text, limits)?;
    }
    Ok(())
}

/// What the scan found: upper bounds, never less than what the parser will see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    /// Tokens that can start a value, plus indicators that can imply an empty one.
    values: usize,
    /// Document markers (`---`, `...`) at the start of a line, plus one.
    documents: usize,
    /// Some reading of the text holds an alias (`*name`).
    aliases: bool,
}

/// Reachable depths per automaton state: bit `d` set means depth `d` is possible there.
#[derive(Default, Clone, Copy)]
struct States {
    /// Between tokens: the next significant character starts one.
    token: u128,
    /// Inside a plain scalar, last character not blank.
    plain: u128,
    /// Inside a plain scalar (or just after one), after blanks on the same line.
    plain_blank: u128,
    /// Inside a single-quoted scalar.
    single: u128,
    /// A `'` seen inside a single-quoted scalar: an escape (`''`) or the end.
    single_quote: u128,
    /// Inside a double-quoted scalar.
    double: u128,
    /// After a backslash inside a double-quoted scalar.
    double_escape: u128,
    /// Inside a comment.
    comment: u128,
    /// Inside an anchor, alias, tag or directive.
    word: u128,
    /// Inside a block scalar (`|`, `>`), which ends at some later line break.
    block_scalar: u128,
}

impl States {
    fn any(&self) -> u128 {
        self.token
            | self.plain
            | self.plain_blank
            | self.single
            | self.single_quote
            | self.double
            | self.double_escape
            | self.comment
            | self.word
            | self.block_scalar
    }
}

/// One level deeper: a flow collection opens.
fn open(depths: u128) -> u128 {
    depths << 1
}

/// One level up: a flow collection closes (libyaml never goes below zero).
fn close(depths: u128) -> u128 {
    (depths >> 1) | (depths & 1)
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Length of the line break at the start of `rest` (libyaml's breaks: CR, LF, NEL, LS, PS).
fn line_break(rest: &[u8]) -> usize {
    match rest {
        [b'\r' | b'\n', ..] => 1,
        [0xC2, 0x85, ..] => 2,
        [0xE2, 0x80, 0xA8 | 0xA9, ..] => 3,
        _ => 0,
    }
}

/// Blank, line break or end of input at the start of `rest`.
fn is_blankz(rest: &[u8]) -> bool {
    rest.first().is_none_or(|&b| is_blank(b)) || line_break(rest) > 0
}

fn scan(text: &str, max_depth: usize) -> Result<Shape, LimitExceeded> {
    let bytes = text.as_bytes();
    let too_deep = u128::MAX << (max_depth + 1);
    let mut st = States {
        token: 1,
        ..States::default()
    };
    let mut shape = Shape {
        values: 0,
        documents: 1,
        aliases: false,
    };
    let mut line = 1usize;
    let mut line_start = true;
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let b = rest[0];
        let brk = line_break(rest);
        let width = brk.max(1);
        let next = &bytes[(i + width).min(bytes.len())..];
        if line_start
            && (rest.starts_with(b"---") || rest.starts_with(b"..."))
            && is_blankz(&rest[3..])
        {
            shape.documents += 1;
        }
        let mut n = States::default();

        // A quote inside a single-quoted scalar: `''` stays inside, anything else ends it.
        if b == b'\'' {
            n.single |= st.single_quote;
        } else {
            st.token |= st.single_quote;
        }
        // An anchor, alias or tag ends at the first character its name cannot hold (which
        // differs between them and libyaml versions): any character may start the next token.
        st.token |= st.word;

        // Between tokens: what libyaml's fetch_next_token does with this character.
        let t = st.token;
        if t != 0 {
            let mut starts_value = true;
            match b {
                _ if brk > 0 || is_blank(b) => {
                    n.token |= t;
                    starts_value = false;
                }
                b'[' | b'{' => n.token |= open(t),
                // A closer or separator can end an entry that holds an empty value.
                b']' | b'}' => n.token |= close(t),
                b',' => n.token |= t,
                b'\'' => n.single |= t,
                b'"' => n.double |= t,
                b'#' => {
                    n.comment |= t;
                    starts_value = false;
                }
                b'*' => {
                    shape.aliases = true;
                    n.word |= t;
                }
                b'&' | b'!' | b'%' | b'@' | b'`' => n.word |= t,
                b'|' | b'>' => n.block_scalar |= t,
                b'-' | b'?' | b':' => {
                    n.token |= t;
                    if !is_blankz(next) {
                        n.plain |= t;
                    }
                }
                _ => n.plain |= t,
            }
            if starts_value {
                // `? key` with no value holds two values besides the mapping.
                shape.values += if b == b'?' { 2 } else { 1 };
            }
        }

        // Inside a plain scalar: flow indicators end it only inside a flow collection.
        let p = st.plain | st.plain_blank;
        if p != 0 {
            let (block, flow) = (p & 1, p & !1);
            match b {
                _ if brk > 0 => {
                    // The next line may continue the scalar or start a new token.
                    n.plain_blank |= p;
                    n.token |= p;
                }
                _ if is_blank(b) => n.plain_blank |= p,
                b'#' => {
                    n.comment |= st.plain_blank;
                    n.plain |= st.plain;
                }
                b':' if is_blankz(next) => {
                    n.token |= p;
                    shape.values += 1;
                }
                b':' => {
                    n.plain |= p;
                    if next.first().is_some_and(|c| b",?[]{}".contains(c)) {
                        n.token |= p;
                    }
                }
                b'[' | b'{' => {
                    n.plain |= block;
                    n.token |= open(flow);
                    shape.values += usize::from(flow != 0);
                }
                b']' | b'}' => {
                    n.plain |= block;
                    n.token |= close(flow);
                    shape.values += usize::from(flow != 0);
                }
                b',' => {
                    n.plain |= block;
                    n.token |= flow;
                    shape.values += usize::from(flow != 0);
                }
                _ => n.plain |= p,
            }
        }

        // Quoted scalars: exact, as libyaml reads them.
        if st.single != 0 {
            if b == b'\'' {
                n.single_quote |= st.single;
            } else {
                n.single |= st.single;
            }
        }
        if st.double != 0 {
            match b {
                b'\\' => n.double_escape |= st.double,
                b'"' => n.token |= st.double,
                _ => n.double |= st.double,
            }
        }
        n.double |= st.double_escape;

        if st.comment != 0 {
            if brk > 0 {
                n.token |= st.comment;
            } else {
                n.comment |= st.comment;
            }
        }
        if st.word != 0 && brk == 0 && !is_blank(b) {
            n.word |= st.word;
        }
        if st.block_scalar != 0 {
            n.block_scalar |= st.block_scalar;
            if brk > 0 {
                n.token |= st.block_scalar;
            }
        }

        if n.any() & too_deep != 0 {
            return Err(LimitExceeded(format!(
                "nests flow collections ([…] or {{…}}) deeper than {max_depth} at line {line} \
                 (limits.max_manifest_depth)"
            )));
        }
        st = n;
        if brk > 0 {
            // CR LF is one break.
            let crlf = b == b'\r' && bytes.get(i + 1) == Some(&b'\n');
            i += if crlf { 2 } else { brk };
            line += 1;
            line_start = true;
        } else {
            i += 1;
            line_start = false;
        }
    }
    Ok(shape)
}

/// Walk every document as the loader expands it, counting values and keeping none.
fn count_expanded_values(text: &str, limits: &ManifestLimits) -> Result<(), LimitExceeded> {
    let used = Cell::new(0usize);
    let exceeded = Cell::new(false);
    let counter = ValueCounter {
        used: &used,
        exceeded: &exceeded,
        max: limits.max_values,
    };
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        if i >= limits.max_documents {
            return Err(LimitExceeded(format!(
                "holds more than {} YAML documents (limits.max_manifest_documents)",
                limits.max_documents
            )));
        }
        if counter.deserialize(de).is_err() {
            if exceeded.get() {
                return Err(LimitExceeded(format!(
                    "expands to more than {} YAML values once its aliases are resolved \
                     (limits.max_manifest_values)",
                    limits.max_values
                )));
            }
            // Not a limit: the parser reports the error itself, within the same bounds.
            return Ok(());
        }
    }
    Ok(())
}

/// Counts the values of one document (aliases followed) and fails past the budget.
#[derive(Clone, Copy)]
struct ValueCounter<'a> {
    used: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
    max: usize,
}

impl ValueCounter<'_> {
    fn tick<E: de::Error>(&self) -> Result<(), E> {
        let n = self.used.get() + 1;
        self.used.set(n);
        if n > self.max {
            self.exceeded.set(true);
            return Err(E::custom("value budget exceeded"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueCounter<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueCounter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged value: the tag, then the value under it.
        use de::VariantAccess as _;
        let (_, value) = data.variant_seed(std::marker::PhantomData::<de::IgnoredAny>)?;
        value.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        scan(text, max).is_ok()
    }

    #[test]
    fn flow_nesting_is_bounded() {
        let deep = format!("x: {}", "[".repeat(150_000));
        let err = check(&deep, &ManifestLimits::default()).unwrap_err();
        assert!(err.0.contains("limits.max_manifest_depth"), "{err}");
        assert!(depth_ok("x: [[[[1]]]]", 4));
        assert!(!depth_ok("x: [[[[[1]]]]]", 4));
        assert!(!depth_ok("x: {a: {b: {c: {d: {e: 1}}}}}", 4));
        // Closed collections do not add up.
        assert!(depth_ok(&"x: [[[1]]]\n".repeat(1000), 3));
        assert!(depth_ok(&format!("x: [{}]", "[[1]], ".repeat(1000)), 3));
    }

    #[test]
    fn brackets_that_are_text_do_not_count() {
        // Inside quoted scalars, comments, block scalars and block-context plain scalars.
        assert!(depth_ok("a: '[[[[['\nb: \"{{{{{\"\n", 1));
        assert!(depth_ok("a: x # [[[[[\n", 1));
        // Block scalars end where the indentation says, which the scan does not track: their
        // content may count, so unbalanced brackets there are counted (never fewer).
        assert!(depth_ok("a: |\n  [x] {y: [z]}\n  [[]]\nb: 1\n", 2));
        assert!(depth_ok("a: b[[[[[c\n", 1));
        assert!(depth_ok("a: it's [[[[[ here\n", 1));
        // JSON manifests with apostrophes in strings.
        assert!(depth_ok(
            &format!(
                "{{\"kind\": \"ConfigMap\", \"data\": {{{}\"z\": \"it's\"}}}}",
                "\"a\": [\"it's\", [1, 2]], ".repeat(500)
            ),
            4
        ));
    }

    #[test]
    fn closing_brackets_that_are_text_cannot_hide_nesting() {
        // Each of these reads, to libyaml, as deeper nesting than the closing brackets
        // suggest; the scan must see the depth libyaml sees.
        let cases = [
            // Closers inside a quoted scalar inside a flow collection.
            "x: [['a]]]]', [[[[",
            "x: [[\"a]]]]\", [[[[",
            // An escaped quote does not end the scalar.
            "x: [['it''s]]]]', [[[[",
            "x: [[\"\\\"]]]]\", [[[[",
            // A comment inside a flow collection.
            "x: [[ # ]]]]\n [[[[",
            // A quote after a plain scalar's blank is text, not a new scalar.
            "x: [[a 'b, ']]]]', [[[[",
            "x: [[a.'b, ']]]]', [[[[",
            // A tag may contain closers.
            "x: [[!a]]]] b, [[[[",
        ];
        for case in cases {
            assert!(!depth_ok(case, 5), "{case:?} passed a depth limit of 5");
        }
    }

    #[test]
    fn documents_and_values_are_counted_before_parsing() {
        let limits = ManifestLimits {
            max_documents: 3,
            ..ManifestLimits::default()
        };
        assert!(check("a: 1\n---\nb: 2\n---\nc: 3\n", &limits).is_ok());
        let err = check(&"kind: ConfigMap\n---\n".repeat(10), &limits).unwrap_err();
        assert!(err.0.contains("limits.max_manifest_documents"), "{err}");
        let limits = ManifestLimits {
            max_values: 100,
            ..ManifestLimits::default()
        };
        let err = check(&format!("x: [{}]", "a,".repeat(200)), &limits).unwrap_err();
        assert!(err.0.contains("limits.max_manifest_values"), "{err}");
        // The scan never counts fewer values than the parser builds.
        for text in [
            "a: 1\nb: [1, 2, {c: d}]\n",
            "- a\n- b\n-\n- {x: y, z: }\n",
            "k: 'v'\n",
            "{a, b, c}\n",
            "? a\n? b\n",
            "[{a}, {b: }, [], {}]\n",
            "---\n---\n...\n",
            "a: &x\nb: !t\nc: *x\n",
            "k: |\n  text\nl: >\n  more\n",
        ] {
            let shape = scan(text, 10).unwrap();
            let mut built = 0;
            for de in serde_yaml::Deserializer::from_str(text) {
                let used = Cell::new(0);
                let exceeded = Cell::new(false);
                ValueCounter {
                    used: &used,
                    exceeded: &exceeded,
                    max: usize::MAX,
                }
                .deserialize(de)
                .unwrap();
                built += used.get();
            }
            assert!(
                shape.values >= built,
                "{text:?}: scan {} < built {built}",
                shape.values
            );
        }
    }

    #[test]
    fn alias_expansion_is_bounded() {
        let bomb = format!(
            "a: &a [{}]\nb: [{}]\n",
            "x,".repeat(1000),
            "*a,".repeat(5000)
        );
        let err = check(&bomb, &ManifestLimits::default()).unwrap_err();
        assert!(err.0.contains("aliases"), "{err}");
        // Small, ordinary anchors pass.
        let ok = "base: &b {privileged: false}\nspec:\n  <<: *b\n  x: *b\n";
        assert!(check(ok, &ManifestLimits::default()).is_ok());
    }

    /// The flow depth libyaml's own scanner reaches on `text` (until its first error).
    fn libyaml_flow_depth(text: &str) -> usize {
        use libyaml_rs as sys;
        use std::mem::MaybeUninit;
        let mut max = 0usize;
        // SAFETY: the parser is initialised before use and deleted once; `text` outlives it;
        // every token returned is deleted before the next call.
        unsafe {
            let mut parser = Box::new(MaybeUninit::<sys::yaml_parser_t>::zeroed());
            let p = parser.as_mut_ptr();
            assert!(sys::yaml_parser_initialize(p).ok);
            sys::yaml_parser_set_input_string(p, text.as_ptr(), text.len() as u64);
            let mut depth = 0usize;
            loop {
                let mut token = MaybeUninit::<sys::yaml_token_t>::zeroed();
                if sys::yaml_parser_scan(p, token.as_mut_ptr()).fail {
                    break;
                }
                let ty = (*token.as_ptr()).type_;
                sys::yaml_token_delete(token.as_mut_ptr());
                match ty {
                    sys::YAML_FLOW_SEQUENCE_START_TOKEN | sys::YAML_FLOW_MAPPING_START_TOKEN => {
                        depth += 1;
                        max = max.max(depth);
                    }
                    sys::YAML_FLOW_SEQUENCE_END_TOKEN | sys::YAML_FLOW_MAPPING_END_TOKEN => {
                        depth = depth.saturating_sub(1);
                    }
                    sys::YAML_STREAM_END_TOKEN | sys::YAML_NO_TOKEN => break,
                    _ => {}
                }
            }
            sys::yaml_parser_delete(p);
        }
        max
    }

    /// The scan is checked against libyaml's scanner on many small texts built from the
    /// characters that decide how YAML reads brackets: it must never see less nesting.
    #[test]
    fn the_scan_never_sees_less_nesting_than_libyaml() {
        use rand::{Rng as _, SeedableRng as _};
        const PIECES: &[&str] = &[
            "[", "]", "{", "}", ",", " ", "\n", "'", "\"", "\\", "#", " #", ":", ": ", "- ", "a",
            "b.", "it's", "!t", "&a ", "*a", "|", ">", "? ", "  ", "''", "\t", "---\n", "...\n",
            "x: ", "\r\n", "\u{85}", ":[", "'x'", "\"y\"", "\\\"", "\u{2028}", "%", "!!str ", "-x",
            "?x", ":x", "&a", "!", "\t#", "<<: ", "@",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut checked = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(1..60);
            let text: String = (0..len)
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            let real = libyaml_flow_depth(&text);
            if real == 0 {
                continue;
            }
            checked += 1;
            assert!(
                scan(&text, real - 1).is_err(),
                "libyaml nests {real} deep in {text:?}; the scan saw less"
            );
        }
        assert!(checked > 1_000, "only {checked} texts had flow collections");
    }
}
