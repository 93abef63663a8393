//! Record framing of a stream segment:
//! `[len: u32][crc: u32][offset: u64][timestamp: i64][filter_len: u16][filter][payload]`,
//! little-endian; `len` counts everything after the CRC, the CRC (CRC-32C) covers the same bytes.

use bytes::Bytes;

/// Length and CRC.
pub(crate) const HEADER_LEN: usize = 8;
/// Offset, timestamp, filter length.
pub(crate) const FIXED_LEN: usize = 8 + 8 + 2;
/// Largest `len` accepted; anything larger is a damaged length field.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

/// One record read back from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its offset: records are numbered from 0, one per record, never reused.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as given to the append.
    pub timestamp_ms: i64,
    /// The filter value given to the append, if any.
    pub filter: Option<Bytes>,
    /// The record's bytes.
    pub payload: Bytes,
}

/// Bytes a record with this filter and payload takes on disk.
pub(crate) fn encoded_len(filter: usize, payload: usize) -> usize {
    HEADER_LEN + FIXED_LEN + filter + payload
}

/// Appends one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, offset: u64, ts: i64, filter: &[u8], payload: &[u8]) {
    let start = buf.len();
    let len = (FIXED_LEN + filter.len() + payload.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&(filter.len() as u16).to_le_bytes());
    buf.extend_from_slice(filter);
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + HEADER_LEN..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A whole, checksummed record of `size` bytes.
    Record {
        size: usize,
        offset: u64,
        ts: i64,
        filter: &'a [u8],
        payload: &'a [u8],
    },
    /// The buffer ends inside the record; it needs `need` bytes in all.
    Partial { need: usize },
    /// Not a record: a bad length or checksum.
    Damaged(&'static str),
}

/// Decodes the record at the start of `buf`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER_LEN {
        return Decoded::Partial { need: HEADER_LEN };
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(FIXED_LEN..=MAX_RECORD_LEN).contains(&len) {
        return Decoded::Damaged("implausible record length");
    }
    let size = HEADER_LEN + len;
    if buf.len() < size {
        return Decoded::Partial { need: size };
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = &buf[HEADER_LEN..size];
    if crc32c::crc32c(body) != crc {
        return Decoded::Damaged("checksum mismatch");
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        b
    };
    let offset = u64::from_le_bytes(u64_at(0));
    let ts = i64::from_le_bytes(u64_at(8));
    let flen = u16::from_le_bytes([body[16], body[17]]) as usize;
    if FIXED_LEN + flen > len {
        return Decoded::Damaged("filter longer than the record");
    }
    Decoded::Record {
        size,
        offset,
        ts,
        filter: &body[FIXED_LEN..FIXED_LEN + flen],
        payload: &body[FIXED_LEN + flen..],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, -3, b"eu", b"hello");
        assert_eq!(buf.len(), encoded_len(2, 5));
        match decode(&buf) {
            Decoded::Record {
                size,
                offset,
                ts,
                filter,
                payload,
            } => {
                assert_eq!((size, offset, ts), (buf.len(), 7, -3));
                assert_eq!((filter, payload), (&b"eu"[..], &b"hello"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode(&buf[..buf.len() - 1]),
            Decoded::Partial { need: buf.len() }
        );
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert_eq!(decode(&buf), Decoded::Damaged("checksum mismatch"));
        assert_eq!(
            decode(&[0; 8]),
            Decoded::Damaged("implausible record length")
        );
    }
}
