//! Crate-private primitive readers and writers shared by tables, properties and methods.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::shortstr::ShortStr;

/// A bounds-checked cursor over a frame payload; every slice it hands out shares the payload.
pub(crate) struct Reader {
    buf: Bytes,
    bits: u8,
    bit_n: u8,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader {
            buf,
            bits: 0,
            bit_n: 0,
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.bit_n = 0;
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.bit_n = 0;
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.bit_n = 0;
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.bit_n = 0;
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    /// One packed bit: consecutive bits share an octet, least significant bit first.
    pub(crate) fn bit(&mut self) -> Result<bool, DecodeError> {
        if self.bit_n == 0 || self.bit_n == 8 {
            self.need(1)?;
            self.bits = self.buf.get_u8();
            self.bit_n = 0;
        }
        let v = (self.bits >> self.bit_n) & 1 == 1;
        self.bit_n += 1;
        Ok(v)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.bit_n = 0;
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    pub(crate) fn shortstr(&mut self) -> Result<ShortStr, DecodeError> {
        let n = self.u8()? as usize;
        Ok(ShortStr::from_bytes(self.bytes(n)?))
    }

    pub(crate) fn longstr(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Appends fields to the caller's buffer, packing consecutive bits into one octet.
pub(crate) struct Writer<'a> {
    pub(crate) out: &'a mut BytesMut,
    bit_at: usize,
    bit_n: u8,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut BytesMut) -> Self {
        Writer {
            out,
            bit_at: 0,
            bit_n: 0,
        }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.bit_n = 0;
        self.out.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.bit_n = 0;
        self.out.put_u16(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bit_n = 0;
        self.out.put_u32(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bit_n = 0;
        self.out.put_u64(v);
    }

    pub(crate) fn bit(&mut self, v: bool) {
        if self.bit_n == 0 || self.bit_n == 8 {
            self.bit_at = self.out.len();
            self.out.put_u8(0);
            self.bit_n = 0;
        }
        if v {
            self.out[self.bit_at] |= 1 << self.bit_n;
        }
        self.bit_n += 1;
    }

    pub(crate) fn shortstr(&mut self, s: &ShortStr) {
        self.bit_n = 0;
        // ShortStr guarantees len <= 255.
        self.out.put_u8(s.len() as u8);
        self.out.put_slice(s.as_bytes());
    }

    pub(crate) fn longstr(&mut self, s: &[u8]) {
        self.bit_n = 0;
        self.out.put_u32(s.len() as u32);
        self.out.put_slice(s);
    }

    /// Reserves a u32 length to be patched by [`Writer::end_len`]; returns its position.
    pub(crate) fn begin_len(&mut self) -> usize {
        self.bit_n = 0;
        let at = self.out.len();
        self.out.put_u32(0);
        at
    }

    pub(crate) fn end_len(&mut self, at: usize) {
        let n = (self.out.len() - at - 4) as u32;
        self.out[at..at + 4].copy_from_slice(&n.to_be_bytes());
    }
}
