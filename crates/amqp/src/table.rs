//! Field tables and arrays with RabbitMQ's type letters.
//!
//! | letter | type | | letter | type |
//! |---|---|---|---|---|
//! | `t` | bool | | `l` | i64 (`L` is read as i64 too, as RabbitMQ does) |
//! | `b` | i8 | | `f` | f32 |
//! | `B` | u8 | | `d` | f64 |
//! | `s` | i16 (RabbitMQ's reading, not shortstr) | | `D` | decimal |
//! | `u` | u16 | | `S` | long string |
//! | `I` | i32 | | `A` | array |
//! | `i` | u32 | | `T` | timestamp |
//! | `F` | table | | `V` | void, `x` byte array |
//!
//! There is no short-string letter RabbitMQ accepts, so [`FieldValue::ShortStr`] is written as
//! `S` and always decodes back as [`FieldValue::LongStr`].

use bytes::{Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::shortstr::ShortStr;

/// Deepest nesting of tables and arrays we decode; deeper input is a syntax error.
pub const MAX_DEPTH: usize = 32;

/// One value in a field table or array.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// `t`: boolean (any non-zero octet is true).
    Bool(bool),
    /// `b`: signed 8-bit.
    I8(i8),
    /// `B`: unsigned 8-bit.
    U8(u8),
    /// `s`: signed 16-bit.
    I16(i16),
    /// `u`: unsigned 16-bit.
    U16(u16),
    /// `I`: signed 32-bit.
    I32(i32),
    /// `i`: unsigned 32-bit.
    U32(u32),
    /// `l` (and `L` on input): signed 64-bit.
    I64(i64),
    /// `f`: 32-bit float.
    F32(f32),
    /// `d`: 64-bit float.
    F64(f64),
    /// `D`: decimal, `value / 10^scale`.
    Decimal {
        /// Number of decimal digits.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// A short string; written as `S` (see the module docs).
    ShortStr(ShortStr),
    /// `S`: long string (raw octets).
    LongStr(Bytes),
    /// `A`: array.
    Array(Vec<FieldValue>),
    /// `T`: timestamp, seconds since the epoch.
    Timestamp(u64),
    /// `F`: nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: byte array.
    ByteArray(Bytes),
}

/// An AMQP field table: ordered `(name, value)` pairs as they appeared on the wire.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldTable(pub Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> Self {
        FieldTable(Vec::new())
    }

    /// The value under `key` (first match), e.g. `x-message-ttl`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|(_, v)| v)
    }

    /// Sets `key`, replacing an existing value in place.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Iterates over the entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = &(ShortStr, FieldValue)> {
        self.0.iter()
    }

    /// Appends the table with its 4-octet length prefix.
    pub fn encode(&self, out: &mut BytesMut) {
        write_table(&mut Writer::new(out), self);
    }

    /// Decodes a length-prefixed table that fills `buf` exactly.
    pub fn decode(buf: Bytes) -> Result<FieldTable, DecodeError> {
        let mut r = Reader::new(buf);
        let t = read_table(&mut r, 0)?;
        r.finish()?;
        Ok(t)
    }

    /// Decodes table entries without the length prefix (the form of an AMQPLAIN response).
    pub fn decode_entries(buf: Bytes) -> Result<FieldTable, DecodeError> {
        read_entries(buf, 0)
    }
}

impl FromIterator<(ShortStr, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (ShortStr, FieldValue)>>(iter: I) -> Self {
        FieldTable(iter.into_iter().collect())
    }
}

pub(crate) fn write_table(w: &mut Writer<'_>, t: &FieldTable) {
    let at = w.begin_len();
    for (k, v) in &t.0 {
        w.shortstr(k);
        write_value(w, v);
    }
    w.end_len(at);
}

fn write_value(w: &mut Writer<'_>, v: &FieldValue) {
    match v {
        FieldValue::Bool(b) => {
            w.u8(b't');
            w.u8(*b as u8);
        }
        FieldValue::I8(x) => {
            w.u8(b'b');
            w.u8(*x as u8);
        }
        FieldValue::U8(x) => {
            w.u8(b'B');
            w.u8(*x);
        }
        FieldValue::I16(x) => {
            w.u8(b's');
            w.u16(*x as u16);
        }
        FieldValue::U16(x) => {
            w.u8(b'u');
            w.u16(*x);
        }
        FieldValue::I32(x) => {
            w.u8(b'I');
            w.u32(*x as u32);
        }
        FieldValue::U32(x) => {
            w.u8(b'i');
            w.u32(*x);
        }
        FieldValue::I64(x) => {
            w.u8(b'l');
            w.u64(*x as u64);
        }
        FieldValue::F32(x) => {
            w.u8(b'f');
            w.u32(x.to_bits());
        }
        FieldValue::F64(x) => {
            w.u8(b'd');
            w.u64(x.to_bits());
        }
        FieldValue::Decimal { scale, value } => {
            w.u8(b'D');
            w.u8(*scale);
            w.u32(*value);
        }
        FieldValue::ShortStr(s) => {
            w.u8(b'S');
            w.longstr(s.as_bytes());
        }
        FieldValue::LongStr(s) => {
            w.u8(b'S');
            w.longstr(s);
        }
        FieldValue::Array(items) => {
            w.u8(b'A');
            let at = w.begin_len();
            for item in items {
                write_value(w, item);
            }
            w.end_len(at);
        }
        FieldValue::Timestamp(x) => {
            w.u8(b'T');
            w.u64(*x);
        }
        FieldValue::Table(t) => {
            w.u8(b'F');
            write_table(w, t);
        }
        FieldValue::Void => w.u8(b'V'),
        FieldValue::ByteArray(b) => {
            w.u8(b'x');
            w.longstr(b);
        }
    }
}

pub(crate) fn read_table(r: &mut Reader, depth: usize) -> Result<FieldTable, DecodeError> {
    let body = r.longstr()?;
    read_entries(body, depth)
}

fn read_entries(body: Bytes, depth: usize) -> Result<FieldTable, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut r = Reader::new(body);
    let mut entries = Vec::new();
    while r.remaining() > 0 {
        let key = r.shortstr()?;
        let value = read_value(&mut r, depth)?;
        entries.push((key, value));
    }
    Ok(FieldTable(entries))
}

fn read_array(body: Bytes, depth: usize) -> Result<Vec<FieldValue>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep(MAX_DEPTH));
    }
    let mut r = Reader::new(body);
    let mut items = Vec::new();
    while r.remaining() > 0 {
        items.push(read_value(&mut r, depth)?);
    }
    Ok(items)
}

fn read_value(r: &mut Reader, depth: usize) -> Result<FieldValue, DecodeError> {
    Ok(match r.u8()? {
        b't' => FieldValue::Bool(r.u8()? != 0),
        b'b' => FieldValue::I8(r.u8()? as i8),
        b'B' => FieldValue::U8(r.u8()?),
        b's' => FieldValue::I16(r.u16()? as i16),
        b'u' => FieldValue::U16(r.u16()?),
        b'I' => FieldValue::I32(r.u32()? as i32),
        b'i' => FieldValue::U32(r.u32()?),
        b'l' | b'L' => FieldValue::I64(r.u64()? as i64),
        b'f' => FieldValue::F32(f32::from_bits(r.u32()?)),
        b'd' => FieldValue::F64(f64::from_bits(r.u64()?)),
        b'D' => FieldValue::Decimal {
            scale: r.u8()?,
            value: r.u32()?,
        },
        b'S' => FieldValue::LongStr(r.longstr()?),
        b'A' => FieldValue::Array(read_array(r.longstr()?, depth + 1)?),
        b'T' => FieldValue::Timestamp(r.u64()?),
        b'F' => FieldValue::Table(read_entries(r.longstr()?, depth + 1)?),
        b'V' => FieldValue::Void,
        b'x' => FieldValue::ByteArray(r.longstr()?),
        other => return Err(DecodeError::UnknownFieldType(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(t: &FieldTable) -> FieldTable {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        FieldTable::decode(out.freeze()).unwrap()
    }

    #[test]
    fn golden_capabilities_table() {
        let mut caps = FieldTable::new();
        caps.insert("publisher_confirms", FieldValue::Bool(true));
        let mut t = FieldTable::new();
        t.insert("capabilities", FieldValue::Table(caps));
        let mut out = BytesMut::new();
        t.encode(&mut out);
        let expected: &[u8] =
            b"\x00\x00\x00\x27\x0ccapabilitiesF\x00\x00\x00\x15\x12publisher_confirmst\x01";
        assert_eq!(&out[..], expected);
        assert_eq!(roundtrip(&t), t);
    }

    #[test]
    fn all_types_roundtrip() {
        let t: FieldTable = vec![
            ("a".into(), FieldValue::Bool(false)),
            ("b".into(), FieldValue::I8(-3)),
            ("c".into(), FieldValue::U8(250)),
            ("d".into(), FieldValue::I16(-300)),
            ("e".into(), FieldValue::U16(60000)),
            ("f".into(), FieldValue::I32(-70000)),
            ("g".into(), FieldValue::U32(4_000_000_000)),
            ("h".into(), FieldValue::I64(-1 << 40)),
            ("i".into(), FieldValue::F32(1.5)),
            ("j".into(), FieldValue::F64(-2.25)),
            (
                "k".into(),
                FieldValue::Decimal {
                    scale: 2,
                    value: 12345,
                },
            ),
            ("l".into(), FieldValue::LongStr(Bytes::from_static(b"long"))),
            (
                "m".into(),
                FieldValue::Array(vec![FieldValue::Void, FieldValue::I8(1)]),
            ),
            ("n".into(), FieldValue::Timestamp(1_700_000_000)),
            ("o".into(), FieldValue::Void),
            (
                "p".into(),
                FieldValue::ByteArray(Bytes::from_static(b"\0\x01")),
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(roundtrip(&t), t);
    }

    #[test]
    fn shortstr_value_reads_back_as_longstr() {
        let mut t = FieldTable::new();
        t.insert("k", FieldValue::ShortStr("v".into()));
        assert_eq!(
            roundtrip(&t).get("k"),
            Some(&FieldValue::LongStr(Bytes::from_static(b"v")))
        );
    }

    #[test]
    fn capital_l_is_i64_and_s_is_i16() {
        let mut raw = BytesMut::new();
        raw.extend_from_slice(&16u32.to_be_bytes());
        raw.extend_from_slice(b"\x01aL\xff\xff\xff\xff\xff\xff\xff\xfe"); // 11 octets
        raw.extend_from_slice(b"\x01bs\xff\xfe"); // 5 octets
        let t = FieldTable::decode(raw.clone().freeze()).unwrap();
        assert_eq!(t.get("a"), Some(&FieldValue::I64(-2)));
        assert_eq!(t.get("b"), Some(&FieldValue::I16(-2)));
        raw.truncate(raw.len() - 1);
        assert_eq!(
            FieldTable::decode(raw.freeze()).unwrap_err(),
            DecodeError::Truncated
        );
    }

    #[test]
    fn insert_replaces() {
        let mut t = FieldTable::new();
        t.insert("x", FieldValue::U8(1));
        t.insert("x", FieldValue::U8(2));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("x"), Some(&FieldValue::U8(2)));
        assert_eq!(t.get("y"), None);
    }

    #[test]
    fn unknown_type_and_depth() {
        let err = FieldTable::decode(Bytes::from_static(b"\x00\x00\x00\x03\x01aZ")).unwrap_err();
        assert_eq!(err, DecodeError::UnknownFieldType(b'Z'));
        // Nest arrays 40 deep: A(len) A(len) ...
        let mut inner = BytesMut::new();
        for _ in 0..40 {
            let mut next = BytesMut::new();
            next.extend_from_slice(b"A");
            next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            next.extend_from_slice(&inner);
            inner = next;
        }
        let mut t = BytesMut::new();
        t.extend_from_slice(&((inner.len() + 2) as u32).to_be_bytes());
        t.extend_from_slice(b"\x01k");
        t.extend_from_slice(&inner);
        assert_eq!(
            FieldTable::decode(t.freeze()).unwrap_err(),
            DecodeError::TooDeep(MAX_DEPTH)
        );
    }
}
