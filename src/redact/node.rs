//! The JSON tree the structural walk works on for documents found inside strings.
//!
//! A typical EKS MCP tool result is a text block holding a `json.dumps` document, and inside
//! it `last-applied-configuration` annotations holding more JSON. Parsing those into
//! `serde_json::Value` was the largest single cost of relaying such a result: every object
//! becomes an index map whose keys are hashed with SipHash on insert and on every lookup.
//! [`Node`] keeps an object's members in a `Vec`, in document order, so parsing allocates
//! each object once and the walk's few lookups are a short linear scan.
//!
//! Semantics are serde_json's, so what is walked and what is written back does not depend on
//! the representation: numbers are `serde_json::Number`, strings are unescaped once, a key
//! that appears twice keeps its first position and its last value, and [`Node`] serialises
//! to the same bytes as the equivalent `Value`.
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value};

/// One JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Node>),
    /// Members in document order, keys unique.
    Object(Vec<(String, Node)>),
}

/// Objects up to this size are checked for repeated keys pairwise; larger ones with a set,
/// so a hostile document with a huge object cannot make parsing quadratic.
const PAIRWISE_DEDUP_MAX: usize = 16;

impl Node {
    /// Parse a JSON document (the whole string, surrounding whitespace allowed).
    pub(crate) fn parse_str(s: &str) -> serde_json::Result<Node> {
        let mut scratch = Scratch::default();
        let mut de = serde_json::Deserializer::from_str(s);
        let v = NodeSeed(&mut scratch).deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_string(&self) -> bool {
        matches!(self, Node::String(_))
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }

    /// The member `key` of an object.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Compact JSON, byte for byte what serde_json writes for the equivalent `Value`.
    pub(crate) fn to_json_string(&self, size_hint: usize) -> String {
        let mut out = Vec::with_capacity(size_hint);
        serde_json::to_writer(&mut out, self).expect("a JSON tree serialises");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// Moves the strings; only the containers are rebuilt.
impl From<Value> for Node {
    fn from(v: Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(s),
            Value::Array(a) => Node::Array(a.into_iter().map(Node::from).collect()),
            Value::Object(m) => Node::Object(m.into_iter().map(|(k, v)| (k, v.into())).collect()),
        }
    }
}

impl From<Node> for Value {
    fn from(n: Node) -> Value {
        match n {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            Node::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k, v.into()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(v) => s.serialize_str(v),
            Node::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for x in a {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Node::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Members of the objects and items of the arrays still open, innermost last: each finished
/// container is allocated once, at its final size.
#[derive(Default)]
struct Scratch {
    entries: Vec<(String, Node)>,
    items: Vec<Node>,
}

struct NodeSeed<'a>(&'a mut Scratch);

impl<'de> DeserializeSeed<'de> for NodeSeed<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        // As serde_json: a float that is not finite becomes null.
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let start = self.0.items.len();
        while let Some(v) = seq.next_element_seed(NodeSeed(&mut *self.0))? {
            self.0.items.push(v);
        }
        Ok(Node::Array(self.0.items.drain(start..).collect()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let start = self.0.entries.len();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(NodeSeed(&mut *self.0))?;
            self.0.entries.push((key, v));
        }
        let mut members: Vec<(String, Node)> = self.0.entries.drain(start..).collect();
        dedup_keys(&mut members);
        Ok(Node::Object(members))
    }
}

/// A repeated key keeps its first position and takes its last value (serde_json's map).
fn dedup_keys(members: &mut Vec<(String, Node)>) {
    let n = members.len();
    let repeated = if n <= PAIRWISE_DEDUP_MAX {
        (1..n).any(|i| members[..i].iter().any(|(k, _)| *k == members[i].0))
    } else {
        let mut seen = HashSet::with_capacity(n);
        !members.iter().all(|(k, _)| seen.insert(k.as_str()))
    };
    if !repeated {
        return;
    }
    let mut out: Vec<(String, Node)> = Vec::with_capacity(n);
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (k, v) in members.drain(..) {
        match index.get(&k) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k.clone(), out.len());
                out.push((k, v));
            }
        }
    }
    *members = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes_what_serde_json_does() {
        let big_dup = {
            let mut s = String::from("{");
            for i in 0..40 {
                s.push_str(&format!("\"k{}\":{i},", i % 25));
            }
            s.push_str("\"end\":true}");
            s
        };
        for doc in [
            r#"{"a":1,"b":[true,false,null,-3,4.5,1e300,18446744073709551615,-9223372036854775808],"c":{"d":"e\u00e9\n\"","f":{}},"g":[]}"#,
            r#"{"z":1,"a":2,"z":3,"m":{"k":[{"x":1,"x":2}]}}"#,
            r#"[1,[2,[3,{"a":[4]}]],"s",{"":""}]"#,
            r#"  "just a string"  "#,
            "12",
            "-0.0",
            "{}",
            r#"{"nested":"{\"inner\":[1,2,{\"k\":\"v\"}]}"}"#,
            &big_dup,
        ] {
            let want: Value = serde_json::from_str(doc).unwrap();
            let got = Node::parse_str(doc).unwrap();
            assert_eq!(
                got.to_json_string(0),
                serde_json::to_string(&want).unwrap(),
                "{doc}"
            );
            assert_eq!(Value::from(got.clone()), want, "{doc}");
            assert_eq!(Node::from(want.clone()), got, "{doc}");
        }
        for bad in ["{", r#"{"a":1} x"#, "[1,]", r#"{"a" 1}"#, "", r"\u0000"] {
            assert!(Node::parse_str(bad).is_err(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(
            Node::parse_str(&deep).is_err(),
            "the recursion limit still applies"
        );
    }

    #[test]
    fn lookups() {
        let n = Node::parse_str(r#"{"kind":"Secret","data":{"a":"b"},"n":1}"#).unwrap();
        assert_eq!(n.get("kind").and_then(Node::as_str), Some("Secret"));
        assert!(n.get("data").is_some_and(Node::is_object));
        assert!(n.get("missing").is_none());
        assert!(n.get("kind").is_some_and(Node::is_string));
    }
}
