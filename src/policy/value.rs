//! Serialise Rust values straight into the policy engine's value type.
//!
//! The input document is built for every request. Going through JSON text
//! (`regorus::Value::from_json_str`) or through a `serde_json::Value` builds and throws away
//! a second tree, and on the request path that conversion cost more than a quarter of a whole
//! decision. This serde `Serializer` produces the same value a JSON round trip would (tested
//! below and in the policy equivalence tests): structs and maps become objects with string
//! keys, sequences arrays, `None` and unit `null`, enums their serde representation.
//! Non-finite floats and non-string map keys are errors, as they are in JSON.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use regorus::Value;
use serde::ser::{self, Serialize};

/// Why a value could not be converted.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// `value` as a policy engine value, as JSON would carry it.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, Error> {
    value.serialize(ValueSerializer)
}

thread_local! {
    /// Struct field names are `&'static str`: each becomes an engine string once per thread
    /// and is shared (reference counted) by every document after that. Keyed by the
    /// name's address (a static never moves), so a lookup hashes one word.
    static FIELD_KEYS: RefCell<HashMap<(usize, usize), Value, BuildHasherDefault<AddressHasher>>> =
        RefCell::new(HashMap::default());
}

fn field_key(name: &'static str) -> Value {
    FIELD_KEYS.with(|keys| {
        keys.borrow_mut()
            .entry((name.as_ptr() as usize, name.len()))
            .or_insert_with(|| Value::String(name.into()))
            .clone()
    })
}

/// Hashes the address words of [`FIELD_KEYS`] with one multiply each (the keys are
/// addresses chosen by the linker, not by a caller, so no DoS-resistant hash is needed).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn object(map: BTreeMap<Value, Value>) -> Value {
    Value::from(map)
}

struct ValueSerializer;

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqSerializer;
    type SerializeTuple = SeqSerializer;
    type SerializeTupleStruct = SeqSerializer;
    type SerializeTupleVariant = VariantSeqSerializer;
    type SerializeMap = MapSerializer;
    type SerializeStruct = StructSerializer;
    type SerializeStructVariant = VariantStructSerializer;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(Value::from(i64::from(v)))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(Value::from(u64::from(v)))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        if !v.is_finite() {
            return Err(Error(format!("the number {v} has no JSON representation")));
        }
        Ok(Value::from(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string().into()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.into()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Ok(Value::from(
            v.iter()
                .map(|b| Value::from(u64::from(*b)))
                .collect::<Vec<_>>(),
        ))
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Ok(field_key(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        map.insert(field_key(variant), value.serialize(ValueSerializer)?);
        Ok(object(map))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSerializer, Error> {
        Ok(SeqSerializer(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSerializer, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqSerializer, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSeqSerializer, Error> {
        Ok(VariantSeqSerializer {
            variant,
            items: Vec::with_capacity(len),
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapSerializer, Error> {
        Ok(MapSerializer {
            map: BTreeMap::new(),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<StructSerializer, Error> {
        Ok(StructSerializer(BTreeMap::new()))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantStructSerializer, Error> {
        Ok(VariantStructSerializer {
            variant,
            fields: BTreeMap::new(),
        })
    }
}

struct SeqSerializer(Vec<Value>);

impl ser::SerializeSeq for SeqSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::from(self.0))
    }
}

impl ser::SerializeTuple for SeqSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<Value, Error> {
        ser::SerializeSeq::end(self)
    }
}

struct VariantSeqSerializer {
    variant: &'static str,
    items: Vec<Value>,
}

impl ser::SerializeTupleVariant for VariantSeqSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        map.insert(field_key(self.variant), Value::from(self.items));
        Ok(object(map))
    }
}

struct MapSerializer {
    map: BTreeMap<Value, Value>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        match key.serialize(ValueSerializer)? {
            k @ Value::String(_) => {
                self.key = Some(k);
                Ok(())
            }
            // The key itself is not quoted: this message can reach a deny reason.
            _ => Err(Error("object keys must be strings".into())),
        }
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| Error("a map value came without its key".into()))?;
        // Last one wins, as in a JSON round trip.
        self.map.insert(key, value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(object(self.map))
    }
}

struct StructSerializer(BTreeMap<Value, Value>);

impl ser::SerializeStruct for StructSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0
            .insert(field_key(key), value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(object(self.0))
    }
}

struct VariantStructSerializer {
    variant: &'static str,
    fields: BTreeMap<Value, Value>,
}

impl ser::SerializeStructVariant for VariantStructSerializer {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.fields
            .insert(field_key(key), value.serialize(ValueSerializer)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        let mut map = BTreeMap::new();
        map.insert(field_key(self.variant), object(self.fields));
        Ok(object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    fn via_json<T: Serialize>(v: &T) -> Value {
        Value::from_json_str(&serde_json::to_string(v).unwrap()).unwrap()
    }

    #[test]
    fn matches_a_json_round_trip() {
        let doc = json!({
            "s": "x", "n": 12, "neg": -3, "f": 1.5, "big": u64::MAX, "t": true, "z": null,
            "a": [1, "two", [3], {"four": 4}], "o": {"b": {}, "a": []}, "unicode": "é✓",
            "dup_order": {"z": 1, "a": 2}
        });
        assert_eq!(to_value(&doc).unwrap(), via_json(&doc));

        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum E {
            Unit,
            New(u8),
            Tup(u8, String),
            Rec { a: Option<String> },
        }
        #[derive(Serialize)]
        struct S {
            e: Vec<E>,
            none: Option<u8>,
            map: std::collections::HashMap<String, u32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
        }
        let s = S {
            e: vec![
                E::Unit,
                E::New(1),
                E::Tup(2, "b".into()),
                E::Rec { a: None },
            ],
            none: None,
            map: [("k".to_string(), 7)].into_iter().collect(),
            skipped: None,
        };
        assert_eq!(to_value(&s).unwrap(), via_json(&s));
    }

    #[test]
    fn refuses_what_json_cannot_carry() {
        assert!(to_value(&f64::NAN).is_err());
        let m: BTreeMap<u32, u32> = [(1, 2)].into_iter().collect();
        // serde_json writes integer keys as strings; the policy input never has them, and
        // refusing is the safe answer (the caller fails closed).
        assert!(to_value(&m).is_err());
    }
}
