//! Checks a value before it becomes JSON: JSON has no NaN or infinity
//! (`serde_json` would silently store `null`), and a value nested deeper
//! than [`Context::MAX_DEPTH`](super::Context::MAX_DEPTH) could be stored
//! but not read back. The probe walks the value's `Serialize` impl without
//! building anything, and stops at the first problem, so even a very deep
//! value is never recursed into further than the limit.

use std::fmt;

use serde::ser::{self, Serialize};

/// What the probe found.
#[derive(Debug)]
pub(super) enum Problem {
    /// A float that is NaN or infinite.
    NotFinite(f64),
    /// Nested deeper than the limit.
    TooDeep,
    /// The value's own `Serialize` failed.
    Custom(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotFinite(v) => write!(f, "{v} is not a finite number, and JSON has no NaN or infinity"),
            Problem::TooDeep => write!(f, "nested deeper than the limit"),
            Problem::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Problem {}

impl ser::Error for Problem {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Problem::Custom(msg.to_string())
    }
}

/// Probes `value`: `Ok` if it serializes to JSON with finite numbers and
/// arrays / objects nested at most `max_depth` deep.
pub(super) fn probe<T: Serialize + ?Sized>(value: &T, max_depth: usize) -> Result<(), Problem> {
    value.serialize(Probe { depth: 0, max: max_depth })
}

#[derive(Clone, Copy)]
struct Probe {
    depth: usize,
    max: usize,
}

impl Probe {
    /// One level deeper (an array or object around what follows).
    fn nest(self, levels: usize) -> Result<Probe, Problem> {
        let depth = self.depth + levels;
        if depth > self.max { Err(Problem::TooDeep) } else { Ok(Probe { depth, max: self.max }) }
    }
}

fn float(v: f64) -> Result<(), Problem> {
    if v.is_finite() { Ok(()) } else { Err(Problem::NotFinite(v)) }
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Problem;
    type SerializeSeq = Probe;
    type SerializeTuple = Probe;
    type SerializeTupleStruct = Probe;
    type SerializeTupleVariant = Probe;
    type SerializeMap = Probe;
    type SerializeStruct = Probe;
    type SerializeStructVariant = Probe;

    fn serialize_bool(self, _: bool) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Problem> {
        float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Problem> {
        float(v)
    }
    fn serialize_char(self, _: char) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), Problem> {
        // serde_json writes bytes as an array of numbers.
        self.nest(1).map(|_| ())
    }
    fn serialize_none(self) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Problem> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Problem> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Problem> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Problem> {
        // `{"Variant": value}`
        value.serialize(self.nest(1)?)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Probe, Problem> {
        self.nest(1)
    }
    fn serialize_tuple(self, _: usize) -> Result<Probe, Problem> {
        self.nest(1)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Probe, Problem> {
        self.nest(1)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Probe, Problem> {
        // `{"Variant": [...]}`
        self.nest(2)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Probe, Problem> {
        self.nest(1)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Probe, Problem> {
        self.nest(1)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Probe, Problem> {
        // `{"Variant": {...}}`
        self.nest(2)
    }
}

impl ser::SerializeSeq for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTuple for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeMap for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Problem> {
        key.serialize(*self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeStruct for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Probe {
    type Ok = ();
    type Error = Problem;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, value: &T) -> Result<(), Problem> {
        value.serialize(*self)
    }
    fn end(self) -> Result<(), Problem> {
        Ok(())
    }
}
