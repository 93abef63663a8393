//! Kafka's primitive types: big-endian integers, zig-zag varints, strings and byte arrays with
//! int16/int32 lengths or (flexible versions) unsigned varint lengths plus one, and tagged
//! fields. The reader checks every length against the bytes that remain before it allocates.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// A cursor over a request's bytes; slices it hands out share the request's buffer.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

type R<T> = Result<T, DecodeError>;

impl Reader {
    /// A reader over `buf`.
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &'static str) -> R<()> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> R<Bytes> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// A boolean (one byte, non-zero is true).
    pub fn bool(&mut self) -> R<bool> {
        Ok(self.i8()? != 0)
    }

    /// INT8.
    pub fn i8(&mut self) -> R<i8> {
        self.need(1, "int8")?;
        Ok(self.buf.get_i8())
    }

    /// INT16.
    pub fn i16(&mut self) -> R<i16> {
        self.need(2, "int16")?;
        Ok(self.buf.get_i16())
    }

    /// INT32.
    pub fn i32(&mut self) -> R<i32> {
        self.need(4, "int32")?;
        Ok(self.buf.get_i32())
    }

    /// UINT32.
    pub fn u32(&mut self) -> R<u32> {
        self.need(4, "uint32")?;
        Ok(self.buf.get_u32())
    }

    /// INT64.
    pub fn i64(&mut self) -> R<i64> {
        self.need(8, "int64")?;
        Ok(self.buf.get_i64())
    }

    /// UNSIGNED_VARINT (at most 5 bytes).
    pub fn uvarint(&mut self) -> R<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            self.need(1, "varint")?;
            let b = self.buf.get_u8();
            if i == 4 && b > 0x0f {
                return Err(DecodeError::Varint);
            }
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint)
    }

    /// UNSIGNED_VARLONG (at most 10 bytes).
    pub fn uvarlong(&mut self) -> R<u64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            self.need(1, "varlong")?;
            let b = self.buf.get_u8();
            if i == 9 && b > 0x01 {
                return Err(DecodeError::Varint);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint)
    }

    /// VARINT (zig-zag).
    pub fn varint(&mut self) -> R<i32> {
        let v = self.uvarint()?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// VARLONG (zig-zag).
    pub fn varlong(&mut self) -> R<i64> {
        let v = self.uvarlong()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn utf8(b: Bytes) -> R<String> {
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidString)
    }

    /// NULLABLE_STRING (or COMPACT_NULLABLE_STRING when `compact`).
    pub fn nullable_string(&mut self, compact: bool) -> R<Option<String>> {
        let len = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i16()?)
        };
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize, "string")?;
        Self::utf8(b).map(Some)
    }

    /// STRING (or COMPACT_STRING); null is refused.
    pub fn string(&mut self, compact: bool) -> R<String> {
        self.nullable_string(compact)?
            .ok_or(DecodeError::InvalidLength(-1, "string"))
    }

    /// NULLABLE_BYTES (or COMPACT_NULLABLE_BYTES).
    pub fn nullable_bytes(&mut self, compact: bool) -> R<Option<Bytes>> {
        let len = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize, "bytes").map(Some)
    }

    /// BYTES (or COMPACT_BYTES); null is refused.
    pub fn bytes(&mut self, compact: bool) -> R<Bytes> {
        self.nullable_bytes(compact)?
            .ok_or(DecodeError::InvalidLength(-1, "bytes"))
    }

    /// The length of a nullable array whose elements take at least `min_size` bytes each:
    /// refused when the elements could not fit in what remains, so nothing is allocated for a
    /// count the input cannot back.
    pub fn nullable_array(&mut self, compact: bool, min_size: usize) -> R<Option<usize>> {
        let len = if compact {
            i64::from(self.uvarint()?) - 1
        } else {
            i64::from(self.i32()?)
        };
        if len < 0 {
            return Ok(None);
        }
        let n = len as usize;
        if n.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(DecodeError::InvalidLength(len, "array"));
        }
        Ok(Some(n))
    }

    /// The length of an array (null reads as empty).
    pub fn array(&mut self, compact: bool, min_size: usize) -> R<usize> {
        Ok(self.nullable_array(compact, min_size)?.unwrap_or(0))
    }

    /// Skips a tagged-field section (flexible versions); unknown tags are ignored, as the
    /// protocol asks.
    pub fn tagged_fields(&mut self) -> R<()> {
        let n = self.uvarint()?;
        if n as usize > self.remaining() {
            return Err(DecodeError::InvalidLength(i64::from(n), "tagged fields"));
        }
        for _ in 0..n {
            let _tag = self.uvarint()?;
            let len = self.uvarint()? as usize;
            self.take(len, "tagged field")?;
        }
        Ok(())
    }
}

/// Appends an UNSIGNED_VARINT.
pub fn put_uvarint(out: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Appends an UNSIGNED_VARLONG.
pub fn put_uvarlong(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

/// Appends a VARINT (zig-zag).
pub fn put_varint(out: &mut BytesMut, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32);
}

/// Appends a VARLONG (zig-zag).
pub fn put_varlong(out: &mut BytesMut, v: i64) {
    put_uvarlong(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// How many bytes [`put_varint`] writes for `v`.
pub fn varint_len(v: i32) -> usize {
    let mut u = ((v << 1) ^ (v >> 31)) as u32;
    let mut n = 1;
    while u >= 0x80 {
        u >>= 7;
        n += 1;
    }
    n
}

/// Appends a STRING (or COMPACT_STRING).
pub fn put_string(out: &mut BytesMut, s: &str, compact: bool) {
    put_nullable_string(out, Some(s), compact);
}

/// Appends a NULLABLE_STRING (or COMPACT_NULLABLE_STRING). Longer strings than the int16
/// length allows are cut (names in this protocol are short).
pub fn put_nullable_string(out: &mut BytesMut, s: Option<&str>, compact: bool) {
    match s {
        None if compact => put_uvarint(out, 0),
        None => out.put_i16(-1),
        Some(s) => {
            let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
            if compact {
                put_uvarint(out, b.len() as u32 + 1);
            } else {
                out.put_i16(b.len() as i16);
            }
            out.put_slice(b);
        }
    }
}

/// Appends NULLABLE_BYTES (or COMPACT_NULLABLE_BYTES).
pub fn put_nullable_bytes(out: &mut BytesMut, b: Option<&[u8]>, compact: bool) {
    match b {
        None if compact => put_uvarint(out, 0),
        None => out.put_i32(-1),
        Some(b) => {
            if compact {
                put_uvarint(out, b.len() as u32 + 1);
            } else {
                out.put_i32(b.len() as i32);
            }
            out.put_slice(b);
        }
    }
}

/// Appends BYTES.
pub fn put_bytes(out: &mut BytesMut, b: &[u8], compact: bool) {
    put_nullable_bytes(out, Some(b), compact);
}

/// Appends an array length (or null with `None`).
pub fn put_array_len(out: &mut BytesMut, n: Option<usize>, compact: bool) {
    match n {
        None if compact => put_uvarint(out, 0),
        None => out.put_i32(-1),
        Some(n) if compact => put_uvarint(out, n as u32 + 1),
        Some(n) => out.put_i32(n as i32),
    }
}

/// Appends an empty tagged-field section.
pub fn put_empty_tags(out: &mut BytesMut) {
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(Reader::new(b.freeze()).varint().unwrap(), v);
        }
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(Reader::new(b.freeze()).varlong().unwrap(), v);
        }
    }

    #[test]
    fn overlong_varints_and_arrays_are_refused() {
        let mut r = Reader::new(Bytes::from_static(&[0xff; 11]));
        assert_eq!(r.uvarlong(), Err(DecodeError::Varint));
        // 1,000,000 int32 elements announced, four bytes follow.
        let mut r = Reader::new(Bytes::from_static(&[0, 0x0f, 0x42, 0x40, 0, 0, 0, 1]));
        assert!(matches!(
            r.array(false, 4),
            Err(DecodeError::InvalidLength(..))
        ));
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(r.nullable_string(false), Ok(None));
    }
}
