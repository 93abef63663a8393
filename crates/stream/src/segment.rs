//! What the log knows about each segment without reading it: its offsets, size, newest
//! timestamp and a sparse index of offset → file position.

/// One sparse index entry: the record at `offset` starts at byte `pos`; `max_ts` is the
/// largest timestamp of the segment's records up to and including it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub max_ts: i64,
}

/// A segment file `<base:020>.seg` holding offsets `base..next`.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    /// Offset of its first record (the file name).
    pub base: u64,
    /// One past its last record's offset.
    pub next: u64,
    /// Bytes appended (written or still pending).
    pub size: u64,
    /// Largest timestamp in it (`i64::MIN` while empty).
    pub max_ts: i64,
    /// Sparse index: the first record, then one every `interval` bytes.
    pub index: Vec<IndexEntry>,
    last_indexed: u64,
}

impl Segment {
    /// An empty segment whose first record will have offset `base`.
    pub fn new(base: u64) -> Self {
        Segment {
            base,
            next: base,
            size: 0,
            max_ts: i64::MIN,
            index: Vec::new(),
            last_indexed: 0,
        }
    }

    /// Accounts for a record of `len` bytes appended at the end.
    pub fn push(&mut self, offset: u64, ts: i64, len: u64, interval: u64) {
        self.max_ts = self.max_ts.max(ts);
        if self.index.is_empty() || self.size - self.last_indexed >= interval {
            self.index.push(IndexEntry {
                offset,
                pos: self.size,
                max_ts: self.max_ts,
            });
            self.last_indexed = self.size;
        }
        self.size += len;
        self.next = offset + 1;
    }

    /// Records in it.
    pub fn records(&self) -> u64 {
        self.next - self.base
    }

    /// The file position of the indexed record at or before `offset` and that record's offset.
    pub fn seek(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).map(|i| self.index[i]) {
            Some(e) => (e.pos, e.offset),
            None => (0, self.base),
        }
    }

    /// Where to start scanning for the first record with a timestamp at or after `ts`.
    pub fn seek_time(&self, ts: i64) -> (u64, u64) {
        let i = self.index.partition_point(|e| e.max_ts < ts);
        match i.checked_sub(1).map(|i| self.index[i]) {
            Some(e) => (e.pos, e.offset),
            None => (0, self.base),
        }
    }
}

/// The file name of the segment starting at `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base offset in a segment file name, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_every_interval_and_seek() {
        let mut s = Segment::new(10);
        for i in 0..100u64 {
            s.push(10 + i, i as i64 * 10, 100, 1000);
        }
        assert_eq!(s.records(), 100);
        assert_eq!(s.index.len(), 10);
        assert_eq!(s.seek(10), (0, 10));
        assert_eq!(s.seek(35), (2000, 30));
        assert_eq!(s.seek(5), (0, 10));
        // Timestamps 0, 10, ..; the first record at or after 255 is offset 36, in the
        // stretch indexed at offset 30.
        assert_eq!(s.seek_time(255), (2000, 30));
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert_eq!(parse_name("x.seg"), None);
    }
}
