//! Record framing: `[len: u32 LE][crc32c: u32 LE of type+payload][type: u8][payload]`.
//!
//! `len` counts the type byte and the payload (so a whole record is `8 + len` bytes). See
//! `FORMAT.md` for the payload of each type.

/// Bytes before the type byte: length and CRC.
pub(crate) const HEADER_LEN: u64 = 8;
/// Largest `len` a reader accepts; anything larger is treated as a damaged length field.
pub(crate) const MAX_RECORD_LEN: u32 = 1 << 30;

pub(crate) const T_PUBLISH: u8 = 1;
pub(crate) const T_ACK: u8 = 2;
pub(crate) const T_DELIVERED: u8 = 3;
pub(crate) const T_QUEUE_DELETED: u8 = 4;
pub(crate) const T_MOVED: u8 = 5;
pub(crate) const T_CHECKPOINT: u8 = 6;

/// Flag bit in a `Moved` queue entry: a `Delivered` record had been seen for that queue.
pub(crate) const MOVED_FLAG_DELIVERED: u8 = 1;

/// Total record length (header included) of a publish record, and the body's offset in it.
pub(crate) fn publish_size(queues: usize, body: usize) -> (u64, u64) {
    let body_off = HEADER_LEN + 1 + 8 + 4 + 8 * queues as u64;
    (body_off + body as u64, body_off)
}

/// Total record length of a moved record, and the body's offset in it.
pub(crate) fn moved_size(queues: usize, body: usize) -> (u64, u64) {
    let body_off = HEADER_LEN + 1 + 8 + 8 + 8 + 4 + 9 * queues as u64;
    (body_off + body as u64, body_off)
}

pub(crate) const PAIR_SIZE: u64 = HEADER_LEN + 1 + 16;
pub(crate) const QUEUE_DELETED_SIZE: u64 = HEADER_LEN + 1 + 8;
pub(crate) const CHECKPOINT_SIZE: u64 = HEADER_LEN + 1 + 8;

/// Starts a record in `buf`; returns its start so [`finish`] can fill in length and CRC.
fn begin(buf: &mut Vec<u8>, ty: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER_LEN as usize]);
    buf.push(ty);
    start
}

fn finish(buf: &mut [u8], start: usize) {
    let body = &buf[start + HEADER_LEN as usize..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn encode_publish(buf: &mut Vec<u8>, msg_id: u64, queues: &[u64], body: &[u8]) {
    let start = begin(buf, T_PUBLISH);
    buf.extend_from_slice(&msg_id.to_le_bytes());
    buf.extend_from_slice(&(queues.len() as u32).to_le_bytes());
    for q in queues {
        buf.extend_from_slice(&q.to_le_bytes());
    }
    buf.extend_from_slice(body);
    finish(buf, start);
}

pub(crate) fn encode_moved(
    buf: &mut Vec<u8>,
    msg_id: u64,
    origin: (u64, u64),
    queues: &[(u64, bool)],
    body: &[u8],
) {
    let start = begin(buf, T_MOVED);
    buf.extend_from_slice(&msg_id.to_le_bytes());
    buf.extend_from_slice(&origin.0.to_le_bytes());
    buf.extend_from_slice(&origin.1.to_le_bytes());
    buf.extend_from_slice(&(queues.len() as u32).to_le_bytes());
    for (q, delivered) in queues {
        buf.extend_from_slice(&q.to_le_bytes());
        buf.push(if *delivered { MOVED_FLAG_DELIVERED } else { 0 });
    }
    buf.extend_from_slice(body);
    finish(buf, start);
}

pub(crate) fn encode_pair(buf: &mut Vec<u8>, ty: u8, queue: u64, msg_id: u64) {
    let start = begin(buf, ty);
    buf.extend_from_slice(&queue.to_le_bytes());
    buf.extend_from_slice(&msg_id.to_le_bytes());
    finish(buf, start);
}

pub(crate) fn encode_u64(buf: &mut Vec<u8>, ty: u8, value: u64) {
    let start = begin(buf, ty);
    buf.extend_from_slice(&value.to_le_bytes());
    finish(buf, start);
}

/// A decoded record. Bodies are borrowed; `body_off` is the body's offset from the record start.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Publish {
        msg_id: u64,
        queues: Vec<u64>,
        body_off: u64,
        body: &'a [u8],
    },
    Moved {
        msg_id: u64,
        origin: (u64, u64),
        queues: Vec<(u64, bool)>,
        body_off: u64,
        body: &'a [u8],
    },
    Ack {
        queue: u64,
        msg_id: u64,
    },
    Delivered {
        queue: u64,
        msg_id: u64,
    },
    QueueDeleted {
        queue: u64,
    },
    Checkpoint {
        next_msg_id: u64,
    },
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self.buf.get(self.pos..end).ok_or("payload too short")?;
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let s = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Ok(u32::from_le_bytes(a))
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn end(&self) -> Result<(), &'static str> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err("trailing bytes in record")
        }
    }
}

/// Decodes `type + payload` (the CRC has already been checked).
pub(crate) fn decode(body: &[u8]) -> Result<Record<'_>, &'static str> {
    let mut c = Cursor { buf: body, pos: 0 };
    let ty = c.u8()?;
    let rec = match ty {
        T_PUBLISH => {
            let msg_id = c.u64()?;
            let n = c.u32()? as usize;
            if n > (body.len() - c.pos) / 8 {
                return Err("queue count exceeds record");
            }
            let mut queues = Vec::with_capacity(n);
            for _ in 0..n {
                queues.push(c.u64()?);
            }
            let body_off = HEADER_LEN + c.pos as u64;
            let payload = &body[c.pos..];
            Record::Publish {
                msg_id,
                queues,
                body_off,
                body: payload,
            }
        }
        T_MOVED => {
            let msg_id = c.u64()?;
            let origin = (c.u64()?, c.u64()?);
            let n = c.u32()? as usize;
            if n > (body.len() - c.pos) / 9 {
                return Err("queue count exceeds record");
            }
            let mut queues = Vec::with_capacity(n);
            for _ in 0..n {
                let q = c.u64()?;
                let flags = c.u8()?;
                queues.push((q, flags & MOVED_FLAG_DELIVERED != 0));
            }
            let body_off = HEADER_LEN + c.pos as u64;
            let payload = &body[c.pos..];
            Record::Moved {
                msg_id,
                origin,
                queues,
                body_off,
                body: payload,
            }
        }
        T_ACK | T_DELIVERED => {
            let queue = c.u64()?;
            let msg_id = c.u64()?;
            c.end()?;
            if ty == T_ACK {
                Record::Ack { queue, msg_id }
            } else {
                Record::Delivered { queue, msg_id }
            }
        }
        T_QUEUE_DELETED => {
            let queue = c.u64()?;
            c.end()?;
            Record::QueueDeleted { queue }
        }
        T_CHECKPOINT => {
            let next_msg_id = c.u64()?;
            c.end()?;
            Record::Checkpoint { next_msg_id }
        }
        _ => return Err("unknown record type"),
    };
    Ok(rec)
}

/// Why a segment scan stopped before the end of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Fewer than 8 bytes left: a partial header.
    PartialHeader,
    /// Length field is 0 or larger than [`MAX_RECORD_LEN`].
    ImplausibleLength(u32),
    /// The record claims to extend past the end of the file.
    PastEnd(u32),
    /// The last record of the file has a bad CRC (a torn write).
    BadCrcAtEnd,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::PartialHeader => write!(f, "partial record header"),
            Stop::ImplausibleLength(l) => write!(f, "implausible record length {l}"),
            Stop::PastEnd(l) => write!(f, "record of length {l} extends past end of file"),
            Stop::BadCrcAtEnd => write!(f, "CRC mismatch in the last record"),
        }
    }
}

pub(crate) struct Scan {
    /// Offset where the scan stopped (the file length if it reached the end cleanly).
    pub end: u64,
    pub stop: Option<Stop>,
    /// Records skipped in the middle: (offset, reason).
    pub corrupt: Vec<(u64, String)>,
    pub records: u64,
}

/// Walks all records of one segment's bytes, calling `f(offset, record_len, record)` for each
/// valid one. Never panics on any input and always terminates (each step advances).
pub(crate) fn scan(buf: &[u8], mut f: impl FnMut(u64, u64, Record<'_>)) -> Scan {
    let len = buf.len();
    let mut off = 0usize;
    let mut corrupt = Vec::new();
    let mut stop = None;
    let mut records = 0;
    while off < len {
        let Some(h) = buf.get(off..off + HEADER_LEN as usize) else {
            stop = Some(Stop::PartialHeader);
            break;
        };
        let rec_len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if rec_len == 0 || rec_len > MAX_RECORD_LEN {
            stop = Some(Stop::ImplausibleLength(rec_len));
            break;
        }
        let start = off + HEADER_LEN as usize;
        let end = start + rec_len as usize;
        let Some(body) = buf.get(start..end) else {
            stop = Some(Stop::PastEnd(rec_len));
            break;
        };
        if crc32c::crc32c(body) != crc {
            if end == len {
                stop = Some(Stop::BadCrcAtEnd);
                break;
            }
            corrupt.push((off as u64, "CRC mismatch".to_string()));
            off = end;
            continue;
        }
        match decode(body) {
            Ok(rec) => {
                records += 1;
                f(off as u64, (end - off) as u64, rec);
            }
            Err(e) => corrupt.push((off as u64, e.to_string())),
        }
        off = end;
    }
    Scan {
        end: off as u64,
        stop,
        corrupt,
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_encoding() {
        let mut b = Vec::new();
        encode_publish(&mut b, 7, &[1, 2, 3], b"hello");
        assert_eq!(b.len() as u64, publish_size(3, 5).0);
        assert_eq!(&b[publish_size(3, 5).1 as usize..], b"hello");
        let mut b = Vec::new();
        encode_moved(&mut b, 7, (1, 2), &[(1, true), (9, false)], b"xy");
        assert_eq!(b.len() as u64, moved_size(2, 2).0);
        assert_eq!(&b[moved_size(2, 2).1 as usize..], b"xy");
        let mut b = Vec::new();
        encode_pair(&mut b, T_ACK, 1, 2);
        assert_eq!(b.len() as u64, PAIR_SIZE);
        let mut b = Vec::new();
        encode_u64(&mut b, T_CHECKPOINT, 1);
        assert_eq!(b.len() as u64, CHECKPOINT_SIZE);
    }

    #[test]
    fn scan_round_trip_and_garbage() {
        let mut b = Vec::new();
        encode_publish(&mut b, 7, &[1, 2], b"hello");
        encode_moved(&mut b, 8, (3, 4), &[(5, true)], b"");
        encode_pair(&mut b, T_DELIVERED, 1, 7);
        encode_u64(&mut b, T_QUEUE_DELETED, 2);
        let mut seen = Vec::new();
        let s = scan(&b, |off, _, r| seen.push((off, format!("{r:?}"))));
        assert_eq!(s.records, 4);
        assert!(s.stop.is_none() && s.corrupt.is_empty());
        assert_eq!(s.end, b.len() as u64);
        // Every truncation stops cleanly.
        for cut in 0..b.len() {
            let s = scan(&b[..cut], |_, _, _| {});
            assert!(s.end <= cut as u64);
        }
        // Arbitrary garbage never panics.
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = scan(&garbage, |_, _, _| {});
    }
}
