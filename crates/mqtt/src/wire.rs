//! MQTT data representation (MQTT 5.0 section 1.5): integers, Variable Byte Integers, UTF-8
//! Encoded Strings, Binary Data and String Pairs, read from a `Bytes` slice of one packet and
//! written into a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::PacketType;
use crate::error::{DecodeError, EncodeError};

/// Largest value of a Variable Byte Integer (four octets).
pub(crate) const VBI_MAX: u32 = 268_435_455;

/// Reads the fields of one packet's variable header and payload.
pub(crate) struct Reader {
    pub(crate) buf: Bytes,
    pub(crate) packet: PacketType,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Reader { buf, packet }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(self.packet))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// A Variable Byte Integer of at most four octets.
    pub(crate) fn var_int(&mut self) -> Result<u32, DecodeError> {
        match parse_var_int(&self.buf) {
            VarInt::Value(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated(self.packet)),
            VarInt::Malformed => Err(DecodeError::MalformedVarInt),
        }
    }

    /// `n` bytes as a zero-copy slice.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left, zero-copy.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a two-byte length and that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A UTF-8 Encoded String, validated, as the raw bytes (zero-copy).
    pub(crate) fn utf8_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let b = self.binary()?;
        if !is_mqtt_utf8(&b) {
            return Err(DecodeError::InvalidUtf8(self.packet));
        }
        Ok(b)
    }

    /// A UTF-8 Encoded String, validated.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.utf8_bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::InvalidUtf8(self.packet))
    }

    /// A sub-reader over the next `n` bytes (a property block).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.take(n)?, self.packet))
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet: self.packet,
                count: self.buf.len(),
            })
        }
    }
}

/// The spec's rules for a UTF-8 Encoded String: well-formed UTF-8 (no surrogates, no overlong
/// forms, which `std::str::from_utf8` already refuses) and no U+0000.
pub(crate) fn is_mqtt_utf8(b: &[u8]) -> bool {
    !b.contains(&0) && std::str::from_utf8(b).is_ok()
}

pub(crate) enum VarInt {
    Value(u32, usize),
    Incomplete,
    Malformed,
}

/// Parses a Variable Byte Integer at the front of `b` (non-minimal encodings are accepted, as
/// Mosquitto and the 3.1.1 text allow).
pub(crate) fn parse_var_int(b: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = b.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return VarInt::Value(value, i + 1);
        }
    }
    VarInt::Malformed
}

/// Number of octets the Variable Byte Integer encoding of `v` takes.
pub(crate) const fn var_int_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_var_int(out: &mut BytesMut, mut v: usize) {
    debug_assert!(v <= VBI_MAX as usize);
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

/// Length on the wire of a string or binary field (two-byte prefix + bytes), checked.
pub(crate) fn field_len(b: &[u8]) -> Result<usize, EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(b.len()))
    } else {
        Ok(2 + b.len())
    }
}

/// Writes a string or binary field; its length was checked by [`field_len`].
pub(crate) fn put_field(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_int_boundaries() {
        for (v, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut out = BytesMut::new();
            put_var_int(&mut out, v);
            assert_eq!(&out[..], bytes, "{v}");
            assert_eq!(var_int_len(v), bytes.len());
            assert!(
                matches!(parse_var_int(bytes), VarInt::Value(x, n) if x as usize == v && n == bytes.len())
            );
        }
        assert!(matches!(
            parse_var_int(&[0xff, 0xff, 0xff, 0xff, 0x7f]),
            VarInt::Malformed
        ));
        assert!(matches!(parse_var_int(&[0xff, 0xff]), VarInt::Incomplete));
    }

    #[test]
    fn utf8_rules() {
        assert!(is_mqtt_utf8("a/ü/€/𝄞".as_bytes()));
        assert!(!is_mqtt_utf8(b"a\0b"));
        // U+D800 encoded as if it were a scalar value.
        assert!(!is_mqtt_utf8(&[0xed, 0xa0, 0x80]));
        // Overlong '/'.
        assert!(!is_mqtt_utf8(&[0xc0, 0xaf]));
    }
}
