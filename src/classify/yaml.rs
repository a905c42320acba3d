//! What the gateway refuses in a manifest because the upstream's YAML reader would read it
//! differently.
//!
//! The open-source EKS MCP server reads manifests with PyYAML's safe loader (YAML 1.1): it
//! honours explicit tags (`!!merge z: {kind: Secret}` is a merge key, so is
//! `!<tag:yaml.org,2002:merge>` and a `%TAG` handle expanding to it; `!!int "12"` is a number),
//! resolves plain scalars by YAML 1.1 rules (`yes`, `on` are booleans, `012` is octal 10,
//! `1_000` and `1:20` are integers, `1e3` is a string), reads NEL, U+2028 and U+2029 as line
//! breaks, does not merge a quoted `"<<"` key, and when two merge sources share a key, which
//! one wins depends on object identity inside CPython. The gateway's reader (YAML 1.2, via
//! libyaml) agrees with PyYAML on everything else, so rather than guess, the gateway refuses
//! each of these before parsing: every explicit tag and `%TAG` directive, plain scalars whose
//! YAML 1.1 reading differs from the YAML 1.2 one, quoted `<<`, those line-break and control
//! characters, and merge sources that share a key. A refusal is a parse error (denied).
//!
//! The token scan runs libyaml's own scanner (the crate the YAML parser is built on), so a `!`
//! is a tag exactly when the parser would take it for one: inside a quoted or block scalar it
//! is text. This file holds the gateway's only `unsafe` code: the calls into that scanner.

use std::mem::MaybeUninit;

use libyaml_rs as sys;
use serde_yaml::Value as Yaml;

/// Why `text` would be read differently by the upstream, or `Ok` when it would not.
pub(super) fn check_reading(text: &str) -> Result<(), String> {
    if let Some((at, c)) = text.char_indices().find(|(_, c)| differing_char(*c)) {
        return Err(format!(
            "contains the character U+{:04X} at byte {at}, which the upstream's YAML 1.1 reader \
             takes for a line break or refuses; remove it",
            c as u32
        ));
    }
    scan(text, |token| match token {
        Token::Tag(mark) => Err(format!(
            "has an explicit tag at line {}: tags (`!!merge`, `!!str`, `!<...>`, `!local`) change \
             what the upstream's reader builds, and the gateway does not accept them; remove it",
            mark
        )),
        Token::TagDirective(mark) => Err(format!(
            "has a %TAG directive at line {}: tag handles are not accepted; remove it",
            mark
        )),
        Token::Scalar { plain, value, line } => check_scalar(plain, value, line),
    })
}

/// NEL, LS, PS (line breaks to YAML 1.1), the byte-order mark anywhere, and the control
/// characters PyYAML refuses.
fn differing_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}')
}

/// A scalar the two readers type differently.
fn check_scalar(plain: bool, value: &str, line: u64) -> Result<(), String> {
    if !plain {
        if value == "<<" {
            return Err(format!(
                "has a quoted `<<` at line {line}: the upstream's reader does not merge a quoted \
                 key, the gateway's does; write it plain or remove it"
            ));
        }
        return Ok(());
    }
    match yaml11_reading_differs(value) {
        Some(reading) => Err(format!(
            "has the plain scalar {value:?} at line {line}, which the upstream's YAML 1.1 reader \
             reads as {reading}; quote it if it is text"
        )),
        None => Ok(()),
    }
}

/// How PyYAML (YAML 1.1) reads a plain scalar, when that differs from the YAML 1.2 reading
/// the gateway's parser gives it. Agreed spellings (decimal integers, `true`/`false`,
/// `null`/`~`, decimal floats with a dot, `.inf`/`.nan`, `0x` hex, dates) pass.
fn yaml11_reading_differs(v: &str) -> Option<&'static str> {
    use std::sync::LazyLock;
    static RULES: LazyLock<[(regex::Regex, &'static str); 4]> = LazyLock::new(|| {
        let re = |s: &str| regex::Regex::new(s).expect("static regex");
        [
            // YAML 1.1 booleans that YAML 1.2 reads as strings.
            (
                re(r"^(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$"),
                "a boolean",
            ),
            // YAML 1.1 integers: binary, octal with a leading 0, underscores, base 60.
            (
                re(
                    r"^[-+]?(?:0b[0-1_]+|0[0-7_]+|[0-9][0-9_]*_[0-9_]*|0x[0-9a-fA-F_]*_[0-9a-fA-F_]*|[-+]0x[0-9a-fA-F_]+|[1-9][0-9_]*(?::[0-5]?[0-9])+)$",
                ),
                "an integer",
            ),
            // YAML 1.1 floats with underscores or base 60; `=` (the value key).
            (
                re(
                    r"^(?:[-+]?[0-9][0-9_]*_[0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*\.[0-9_]*_[0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|=)$",
                ),
                "a number or the value key",
            ),
            // Strings to YAML 1.1 that YAML 1.2 reads as numbers (no dot before the exponent,
            // 0o octal), infinities and NaN (JSON has none), and timestamps with a time (YAML 1.1
            // rewrites them).
            (
                re(
                    r"^(?:[-+]?[0-9]+(?:[eE][-+]?[0-9]+)|[-+]?[0-9]+\.[0-9]*[eE][0-9]+|[-+]?0o[0-7]+|[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}(?:[Tt]|[ \t]+)[0-9].*)$",
                ),
                "something else than the gateway's YAML 1.2 reader",
            ),
        ]
    });
    RULES
        .iter()
        .find(|(re, _)| re.is_match(v))
        .map(|(_, reading)| *reading)
}

/// A key present in two merge sources of one mapping: PyYAML 6 keeps whichever its
/// object-identity check sees first, which cannot be predicted from the text.
pub(super) fn check_merges(value: &Yaml) -> Result<(), String> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Yaml::Mapping(map) => {
                if let Some(Yaml::Sequence(sources)) = map.get("<<") {
                    let mut seen = std::collections::HashSet::new();
                    for source in sources {
                        if let Yaml::Mapping(m) = source {
                            for key in m.keys() {
                                if !seen.insert(key) {
                                    let shown = serde_yaml::to_string(key).unwrap_or_default();
                                    return Err(format!(
                                        "merges the key {} from two sources; which one the \
                                         upstream's reader keeps is not defined, so write it once",
                                        shown.trim()
                                    ));
                                }
                            }
                        }
                    }
                }
                stack.extend(map.values());
                stack.extend(map.keys());
            }
            Yaml::Sequence(seq) => stack.extend(seq.iter()),
            Yaml::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    Ok(())
}

/// The tokens the checks look at.
enum Token<'a> {
    /// An explicit tag (`!x`, `!!x`, `!<x>`), with its line.
    Tag(u64),
    /// A `%TAG` directive, with its line.
    TagDirective(u64),
    Scalar {
        plain: bool,
        value: &'a str,
        line: u64,
    },
}

/// Run libyaml's scanner over `text`, calling `f` for the tokens above. A text the scanner
/// refuses is left to the parser, which refuses it with the same error.
fn scan(text: &str, mut f: impl FnMut(Token<'_>) -> Result<(), String>) -> Result<(), String> {
    /// The scanner state, deleted on every way out.
    struct Scanner(Box<MaybeUninit<sys::yaml_parser_t>>);
    impl Drop for Scanner {
        fn drop(&mut self) {
            // SAFETY: initialised by yaml_parser_initialize before the value is built.
            unsafe { sys::yaml_parser_delete(self.0.as_mut_ptr()) }
        }
    }
    let mut state = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
    // SAFETY: the parser lives in a Box that does not move while in use, `text` outlives it
    // (the Scanner is dropped at the end of this function), and every token is deleted after
    // its fields were copied out.
    unsafe {
        if sys::yaml_parser_initialize(state.as_mut_ptr()).fail {
            return Err("the YAML scanner could not start".to_string());
        }
        let mut scanner = Scanner(state);
        let parser = scanner.0.as_mut_ptr();
        sys::yaml_parser_set_encoding(parser, sys::YAML_UTF8_ENCODING);
        sys::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
        loop {
            let mut token = MaybeUninit::<sys::yaml_token_t>::uninit();
            if sys::yaml_parser_scan(parser, token.as_mut_ptr()).fail {
                return Ok(());
            }
            let token = token.as_mut_ptr();
            let line = (*token).start_mark.line + 1;
            let result = match (*token).type_ {
                sys::YAML_STREAM_END_TOKEN | sys::YAML_NO_TOKEN => {
                    sys::yaml_token_delete(token);
                    return Ok(());
                }
                sys::YAML_TAG_TOKEN => f(Token::Tag(line)),
                sys::YAML_TAG_DIRECTIVE_TOKEN => f(Token::TagDirective(line)),
                sys::YAML_SCALAR_TOKEN => {
                    let s = (*token).data.scalar;
                    let bytes = std::slice::from_raw_parts(s.value, s.length as usize);
                    match std::str::from_utf8(bytes) {
                        Ok(value) => f(Token::Scalar {
                            plain: matches!(s.style, sys::YAML_PLAIN_SCALAR_STYLE),
                            value,
                            line,
                        }),
                        Err(_) => Err(format!("has a scalar at line {line} that is not UTF-8")),
                    }
                }
                _ => Ok(()),
            };
            sys::yaml_token_delete(token);
            result?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        check_reading(text)
            .err()
            .or_else(|| {
                let v: Yaml = serde_yaml::from_str(text).ok()?;
                check_merges(&v).err()
            })
            .unwrap_or_else(|| panic!("accepted: {text:?}"))
    }

    #[test]
    fn tags_and_tag_directives_are_refused_wherever_they_are_tokens() {
        for text in [
            "a: 1\n!!merge z: {kind: Secret}\n",
            "a: 1\n!<tag:yaml.org,2002:merge> z: {kind: Secret}\n",
            "%TAG !e! tag:yaml.org,2002:\n---\na: 1\n!e!merge z: {kind: Secret}\n",
            "a: !!str 12\n",
            "b: !!int \"12\"\n",
            "c: !!binary aGVsbG8=\n",
            "d: [!!str x]\n",
            "e: {x: 1,!!merge y: {kind: Secret}}\n",
            "--- !!map\nkind: Pod\n",
            "f: &a !local x\n",
        ] {
            assert!(refused(text).contains("tag"), "{text}");
        }
        // A `!` inside text is text.
        for text in [
            "data: {script: \"if [ ! -f x ]; then exit 1; fi\"}\n",
            "data:\n  run.sh: |\n    #!/bin/sh\n    [ \"$a\" != b ] && !x\n",
            "msg: 'hello !!merge'\n",
            "msg: hi!\n",
        ] {
            assert_eq!(check_reading(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn scalars_typed_differently_by_yaml_1_1_are_refused() {
        for v in [
            "yes",
            "No",
            "ON",
            "off",
            "012",
            "0b11",
            "1_000",
            "1:20",
            "0x1_F",
            "1_0.5",
            "1e3",
            "0o17",
            "=",
            ".Inf",
            ".inf",
            ".nan",
            "-0x1F",
            "1.0e3",
            "2001-12-14 21:59:43.10 -5",
            "2001-12-14T21:59:43Z",
        ] {
            let text = format!("a: {v}\n");
            assert!(check_reading(&text).is_err(), "{v} accepted");
            // Quoted, it is text to both readers.
            assert_eq!(check_reading(&format!("a: \"{v}\"\n")), Ok(()), "{v}");
        }
        for v in [
            "1",
            "-12",
            "0",
            "0x1F",
            "true",
            "False",
            "null",
            "~",
            "1.5",
            "-0.25",
            ".5",
            "1.",
            "1.0e+3",
            "2001-12-14",
            "y",
            "n",
            "web-1",
            "v1",
            "1.2.3",
        ] {
            assert_eq!(check_reading(&format!("a: {v}\n")), Ok(()), "{v}");
        }
        assert!(refused("on: [push]\n").contains("boolean"));
    }

    #[test]
    fn line_break_characters_quoted_merge_keys_and_shared_merge_keys_are_refused() {
        assert!(refused("name: a\u{2028}namespace: kube-system\n").contains("U+2028"));
        assert!(refused("name: \"a\u{85}b\"\n").contains("U+0085"));
        assert!(refused("\u{feff}kind: Pod\n").contains("U+FEFF"));
        assert!(refused("a: 1\n\"<<\": {kind: Secret}\n").contains("quoted `<<`"));
        assert!(
            refused("<<: [{namespace: payments}, {namespace: kube-system}]\nkind: Pod\n")
                .contains("namespace")
        );
        // One source per key, or an explicit key over a merged one, is well defined.
        let ok = "<<: [{a: 1}, {b: 2}]\na: 3\n";
        assert_eq!(check_reading(ok), Ok(()));
        assert_eq!(check_merges(&serde_yaml::from_str(ok).unwrap()), Ok(()));
    }
}
