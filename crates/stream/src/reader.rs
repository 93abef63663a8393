//! Readers: independent cursors that pull records from the segment files through the sparse
//! index, with a small buffer of their own (never the whole stream in memory).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use crate::record::{Decoded, HEADER_LEN, decode};
use crate::segment::file_name;
use crate::{Record, Stream, StreamError, io_err};

/// Bytes read from a segment file at a time (more for a larger record).
const READ_SIZE: usize = 64 << 10;

struct Cursor {
    base: u64,
    file: File,
    /// File position of `buf[0]`.
    buf_pos: u64,
    buf: Vec<u8>,
    /// Consumed bytes at the front of `buf`.
    start: usize,
}

/// A position in a stream and a small read buffer. Records come back in offset order; a
/// reader whose next record was deleted by retention continues at the oldest retained one.
pub struct Reader {
    stream: Arc<Stream>,
    next: u64,
    cursor: Option<Cursor>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish()
    }
}

/// The record under the cursor, as positions in the buffer.
struct Peeked {
    size: usize,
    offset: u64,
    ts: i64,
}

impl Reader {
    pub(crate) fn new(stream: Arc<Stream>, next: u64) -> Self {
        Reader {
            stream,
            next,
            cursor: None,
        }
    }

    /// The offset of the next record this reader returns.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The stream read.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Reads up to `max_records` committed records, stopping once `max_bytes` of payload were
    /// returned (at least one record is returned when one is available). An empty result means
    /// the reader is at the committed end: wait with [`Stream::on_commit`].
    pub fn read(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StreamError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_records && bytes < max_bytes {
            let Some(p) = self.peek()? else { break };
            let Some(c) = self.cursor.as_mut() else { break };
            if p.offset >= self.next {
                let body = &c.buf[c.start + HEADER_LEN..c.start + p.size];
                let flen = u16::from_le_bytes([body[16], body[17]]) as usize;
                let filter = &body[18..18 + flen];
                let payload = &body[18 + flen..];
                bytes += payload.len();
                out.push(Record {
                    offset: p.offset,
                    timestamp_ms: p.ts,
                    filter: (flen > 0).then(|| Bytes::copy_from_slice(filter)),
                    payload: Bytes::copy_from_slice(payload),
                });
                self.next = p.offset + 1;
            }
            c.start += p.size;
        }
        Ok(out)
    }

    /// Moves to the first record whose timestamp is at or after `ts` (the committed end when
    /// there is none).
    pub fn seek_timestamp(&mut self, ts: i64) {
        let (target, pos) = {
            let st = self.stream.state.lock();
            match st.segments.values().find(|s| s.max_ts >= ts) {
                Some(s) => {
                    let (pos, offset) = s.seek_time(ts);
                    ((s.base, offset), pos)
                }
                None => {
                    self.next = st.committed;
                    self.cursor = None;
                    return;
                }
            }
        };
        let (base, offset) = target;
        self.next = offset;
        if self.open_at(base, pos).is_err() {
            self.cursor = None;
            return;
        }
        loop {
            match self.peek() {
                Ok(Some(p)) if p.ts < ts || p.offset < self.next => {
                    self.next = self.next.max(p.offset + 1);
                    if let Some(c) = self.cursor.as_mut() {
                        c.start += p.size;
                    }
                }
                Ok(Some(p)) => {
                    self.next = p.offset;
                    return;
                }
                _ => return,
            }
        }
    }

    fn open_at(&mut self, base: u64, pos: u64) -> Result<(), StreamError> {
        let path = self.stream.dir().join(file_name(base));
        let file = File::open(&path).map_err(io_err(&path))?;
        self.cursor = Some(Cursor {
            base,
            file,
            buf_pos: pos,
            buf: Vec::new(),
            start: 0,
        });
        Ok(())
    }

    /// Positions the cursor on the segment holding `self.next` (or the next one retained).
    /// False when there is nothing to read there.
    fn locate(&mut self) -> Result<bool, StreamError> {
        for _ in 0..8 {
            let found = {
                let st = self.stream.state.lock();
                if let Some(first) = st.segments.keys().next() {
                    self.next = self.next.max(*first);
                }
                let seg = st
                    .segments
                    .range(..=self.next)
                    .next_back()
                    .map(|(_, s)| s)
                    .filter(|s| s.next > self.next)
                    .or_else(|| st.segments.range(self.next + 1..).next().map(|(_, s)| s));
                seg.map(|s| {
                    let (pos, _) = s.seek(self.next);
                    (s.base, pos)
                })
            };
            let Some((base, pos)) = found else {
                self.cursor = None;
                return Ok(false);
            };
            match self.open_at(base, pos) {
                Ok(()) => return Ok(true),
                // Deleted by retention meanwhile: look again.
                Err(StreamError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// The committed record under the cursor, reading more of the file as needed.
    fn peek(&mut self) -> Result<Option<Peeked>, StreamError> {
        let committed = self.stream.committed();
        let mut moved = false;
        loop {
            if self.next >= committed {
                return Ok(None);
            }
            if self.cursor.is_none() && !self.locate()? {
                return Ok(None);
            }
            let Some(c) = self.cursor.as_mut() else {
                return Ok(None);
            };
            match decode(&c.buf[c.start..]) {
                Decoded::Record {
                    size, offset, ts, ..
                } => {
                    if offset >= committed {
                        return Ok(None);
                    }
                    return Ok(Some(Peeked { size, offset, ts }));
                }
                Decoded::Partial { need } => {
                    if c.start > 0 {
                        c.buf.drain(..c.start);
                        c.buf_pos += c.start as u64;
                        c.start = 0;
                    }
                    let have = c.buf.len();
                    let want = need.saturating_sub(have).max(READ_SIZE);
                    c.buf.resize(have + want, 0);
                    let at = c.buf_pos + have as u64;
                    let n = read_at(&c.file, &mut c.buf[have..], at)
                        .map_err(io_err(self.stream.dir()))?;
                    c.buf.truncate(have + n);
                    if n == 0 || c.buf.len() < need {
                        // The end of this segment: continue in the next one.
                        let base = c.base;
                        if moved {
                            return Ok(None);
                        }
                        self.cursor = None;
                        if !self.locate()? {
                            return Ok(None);
                        }
                        if self.cursor.as_ref().is_some_and(|c| c.base == base) {
                            moved = true;
                        }
                    }
                }
                Decoded::Damaged(why) => {
                    tracing::warn!(stream = %self.stream.dir().display(), offset = self.next, why, "stream reader met a damaged record; skipping the rest of the segment");
                    let base = c.base;
                    let next_base = {
                        let st = self.stream.state.lock();
                        st.segments.range(base + 1..).next().map(|(b, _)| *b)
                    };
                    match next_base {
                        Some(b) => {
                            self.next = self.next.max(b);
                            self.cursor = None;
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }
}

fn read_at(file: &File, buf: &mut [u8], mut at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                at += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
