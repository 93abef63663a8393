//! Tributary's stream logs: append-only, segmented, checksummed logs of records numbered by
//! offset, read by any number of independent readers from any offset or timestamp.
//!
//! A [`Stream`] lives in its own directory of segment files (`<base offset:020>.seg`). Appends
//! are encoded into an in-memory buffer under the stream's short lock and assigned offsets at
//! once; one [`Syncer`] thread shared by every stream writes the buffers, `fdatasync`s them and
//! only then runs the [`Stream::on_durable`] callbacks and makes the records visible to readers
//! ([`Stream::committed`]). A [`Reader`] pulls records from disk through a sparse in-memory index
//! with a small buffer of its own, so reading a stream larger than memory never loads it.
//! Retention ([`StreamOptions::max_bytes`], [`StreamOptions::max_age_ms`]) deletes whole
//! segments, oldest first, never the one being written. The format is in `FORMAT.md`.
//!
//! The crate does file IO on plain threads and has no async runtime, like `tributary-store`.

pub mod fuzzing;
mod reader;
mod record;
mod recovery;
mod segment;
mod sync;

pub use reader::Reader;
pub use record::Record;
pub use recovery::OpenReport;
pub use sync::Syncer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::segment::Segment;

/// Largest payload plus filter one record may carry.
pub const MAX_RECORD: usize = 256 << 20;

/// Retention and layout settings of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// A new segment is started once the next record would take the current one past this
    /// size (a single larger record gets a segment of its own). RabbitMQ's default: 500 MB.
    pub max_segment_bytes: u64,
    /// Delete the oldest segments while the stream is larger than this.
    pub max_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this (milliseconds).
    pub max_age_ms: Option<u64>,
    /// A sparse index entry every this many bytes of a segment.
    pub index_interval_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_segment_bytes: 500_000_000,
            max_bytes: None,
            max_age_ms: None,
            index_interval_bytes: 64 << 10,
        }
    }
}

/// Errors of stream operations. Damaged records are never an error at open (they are cut off
/// and reported); these are environment failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A record is larger than [`MAX_RECORD`].
    #[error("a record of {0} bytes is larger than the limit of {MAX_RECORD}")]
    TooLarge(usize),
    /// A write or fsync failed earlier: nothing appended since is durable, and the stream
    /// accepts no more appends (after a failed fsync the page cache state is unknown).
    #[error("the stream failed and accepts no more appends: {0}")]
    Failed(String),
    /// The stream was deleted or its syncer stopped.
    #[error("the stream is closed")]
    Closed,
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StreamError + '_ {
    move |source| StreamError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A record to append.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// A filter value (RabbitMQ's `x-stream-filter-value`), at most 65535 bytes.
    pub filter: Option<&'a [u8]>,
    /// The record's bytes.
    pub payload: &'a [u8],
}

/// Where a reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest record retained.
    First,
    /// The newest committed record (or the next one when the stream is empty).
    Last,
    /// The next record appended after the reader is created.
    Next,
    /// This offset (clamped into the retained range).
    Offset(u64),
    /// The first record whose timestamp is at or after this (ms since the epoch).
    Timestamp(i64),
}

/// A snapshot of a stream's extent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Oldest retained offset.
    pub first_offset: u64,
    /// One past the newest committed (durable, readable) record.
    pub committed: u64,
    /// One past the newest appended record.
    pub next_offset: u64,
    /// Retained records (committed or not).
    pub records: u64,
    /// Bytes of the retained segments.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
}

type Callback = Box<dyn FnOnce() + Send>;

/// Bytes waiting for the syncer, at a position of a segment file.
pub(crate) struct Chunk {
    pub base: u64,
    pub pos: u64,
    pub data: Vec<u8>,
}

pub(crate) struct State {
    pub segments: BTreeMap<u64, Segment>,
    pub next_offset: u64,
    pub committed: u64,
    pub pending: Vec<Chunk>,
    pub durable_callbacks: Vec<Callback>,
    /// Called once `committed` passes the offset.
    pub listeners: Vec<(u64, Callback)>,
    pub queued: bool,
    pub failed: Option<String>,
    pub closed: bool,
}

/// One stream log. Share it as the `Arc` that [`Stream::open`] returns.
pub struct Stream {
    dir: PathBuf,
    options: Mutex<StreamOptions>,
    pub(crate) state: Mutex<State>,
    /// The sync thread's open head file (base, file).
    pub(crate) writer: Mutex<Option<(u64, File)>>,
    syncer: Arc<Syncer>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("dir", &self.dir).finish()
    }
}

impl Stream {
    /// Opens (or creates) the stream in `dir`. The last segment's torn tail (a record cut by a
    /// crash, never confirmed) is truncated; the report says what was found.
    pub fn open(
        dir: &Path,
        options: StreamOptions,
        syncer: &Arc<Syncer>,
    ) -> Result<(Arc<Stream>, OpenReport), StreamError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (segments, report) = recovery::recover(dir, options.index_interval_bytes.max(1))?;
        let next = segments.values().next_back().map_or(0, |s| s.next);
        let stream = Arc::new(Stream {
            dir: dir.to_path_buf(),
            options: Mutex::new(options),
            state: Mutex::new(State {
                segments,
                next_offset: next,
                committed: next,
                pending: Vec::new(),
                durable_callbacks: Vec::new(),
                listeners: Vec::new(),
                queued: false,
                failed: None,
                closed: false,
            }),
            writer: Mutex::new(None),
            syncer: syncer.clone(),
        });
        Ok((stream, report))
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the retention settings (applied at the next append or [`Stream::enforce_retention`]).
    pub fn set_options(&self, options: StreamOptions) {
        *self.options.lock() = options;
    }

    /// The current settings.
    pub fn options(&self) -> StreamOptions {
        self.options.lock().clone()
    }

    /// Appends records; returns the offset of the first. They become durable and readable
    /// when the syncer has written and fsynced them ([`Stream::on_durable`]).
    pub fn append(self: &Arc<Self>, records: &[NewRecord<'_>]) -> Result<u64, StreamError> {
        for r in records {
            let n = r.payload.len() + r.filter.map_or(0, <[u8]>::len);
            if n > MAX_RECORD || r.filter.is_some_and(|f| f.len() > u16::MAX as usize) {
                return Err(StreamError::TooLarge(n));
            }
        }
        let (max_segment, interval) = {
            let o = self.options.lock();
            (o.max_segment_bytes.max(1), o.index_interval_bytes.max(1))
        };
        let mut st = self.state.lock();
        if let Some(f) = &st.failed {
            return Err(StreamError::Failed(f.clone()));
        }
        if st.closed {
            return Err(StreamError::Closed);
        }
        let first = st.next_offset;
        for r in records {
            let filter = r.filter.unwrap_or_default();
            let len = record::encoded_len(filter.len(), r.payload.len()) as u64;
            let offset = st.next_offset;
            let head = match st.segments.values().next_back() {
                Some(s) if s.size == 0 || s.size + len <= max_segment => s.base,
                _ => {
                    st.segments.insert(offset, Segment::new(offset));
                    offset
                }
            };
            let Some(seg) = st.segments.get_mut(&head) else {
                return Err(StreamError::Closed);
            };
            let pos = seg.size;
            seg.push(offset, r.timestamp_ms, len, interval);
            let extend = matches!(st.pending.last(),
                Some(c) if c.base == head && c.pos + c.data.len() as u64 == pos);
            if !extend {
                st.pending.push(Chunk {
                    base: head,
                    pos,
                    data: Vec::new(),
                });
            }
            if let Some(c) = st.pending.last_mut() {
                record::encode(&mut c.data, offset, r.timestamp_ms, filter, r.payload);
            }
            st.next_offset = offset + 1;
        }
        let queue = !st.queued;
        st.queued = true;
        drop(st);
        if queue {
            self.syncer.schedule(self.clone());
        }
        Ok(first)
    }

    /// Calls `done` from the sync thread once everything appended before this call is durable.
    /// If the stream fails or is closed first, `done` is dropped without being called.
    pub fn on_durable(self: &Arc<Self>, done: Box<dyn FnOnce() + Send>) {
        let mut st = self.state.lock();
        if st.failed.is_some() || st.closed {
            return;
        }
        if st.pending.is_empty() && !st.queued && st.committed == st.next_offset {
            drop(st);
            done();
            return;
        }
        st.durable_callbacks.push(done);
        let queue = !st.queued;
        st.queued = true;
        drop(st);
        if queue {
            self.syncer.schedule(self.clone());
        }
    }

    /// Calls `wake` once a record at or after `offset` is committed (at once if one is).
    pub fn on_commit(&self, offset: u64, wake: Box<dyn FnOnce() + Send>) {
        let mut st = self.state.lock();
        if st.committed > offset || st.closed {
            drop(st);
            wake();
            return;
        }
        st.listeners.push((offset, wake));
    }

    /// One past the newest durable record: readers see offsets below it.
    pub fn committed(&self) -> u64 {
        self.state.lock().committed
    }

    /// The stream's extent.
    pub fn info(&self) -> StreamInfo {
        let st = self.state.lock();
        let first = st
            .segments
            .values()
            .next()
            .map_or(st.next_offset, |s| s.base);
        StreamInfo {
            first_offset: first,
            committed: st.committed,
            next_offset: st.next_offset,
            records: st.next_offset - first,
            bytes: st.segments.values().map(|s| s.size).sum(),
            segments: st.segments.len() as u64,
        }
    }

    /// True once the stream was deleted.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// A reader positioned by `start`.
    pub fn reader(self: &Arc<Self>, start: Start) -> Reader {
        let offset = {
            let st = self.state.lock();
            let first = st.segments.values().next().map_or(st.committed, |s| s.base);
            match start {
                Start::First => first,
                Start::Last => st.committed.saturating_sub(1).max(first),
                Start::Next => st.next_offset,
                Start::Offset(o) => o.max(first),
                Start::Timestamp(_) => first,
            }
        };
        let mut reader = Reader::new(self.clone(), offset);
        if let Start::Timestamp(ts) = start {
            reader.seek_timestamp(ts);
        }
        reader
    }

    /// Deletes the oldest segments that retention no longer keeps; returns how many. Never
    /// the segment being written, nor one with records not yet durable.
    pub fn enforce_retention(&self, now_ms: i64) -> usize {
        let (max_bytes, max_age) = {
            let o = self.options.lock();
            (o.max_bytes, o.max_age_ms)
        };
        if max_bytes.is_none() && max_age.is_none() {
            return 0;
        }
        let doomed: Vec<u64> = {
            let mut st = self.state.lock();
            if st.closed {
                return 0;
            }
            let mut total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut doomed = Vec::new();
            let committed = st.committed;
            let last = st.segments.keys().next_back().copied();
            for s in st.segments.values() {
                if Some(s.base) == last || s.next > committed {
                    break;
                }
                let too_big = max_bytes.is_some_and(|m| total > m);
                let too_old = max_age.is_some_and(|a| {
                    s.max_ts < now_ms.saturating_sub(a.min(i64::MAX as u64) as i64)
                });
                if !(too_big || too_old) {
                    break;
                }
                total -= s.size;
                doomed.push(s.base);
            }
            for b in &doomed {
                st.segments.remove(b);
            }
            doomed
        };
        for base in &doomed {
            let path = self.dir.join(segment::file_name(*base));
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a stream segment");
            }
            tracing::debug!(stream = %self.dir.display(), base, "retention deleted a segment");
        }
        doomed.len()
    }

    /// Deletes the stream: later appends fail, waiting listeners are woken, the directory is
    /// removed.
    pub fn destroy(&self) {
        let listeners = {
            let mut st = self.state.lock();
            st.closed = true;
            st.pending.clear();
            st.durable_callbacks.clear();
            std::mem::take(&mut st.listeners)
        };
        let _writer = self.writer.lock().take();
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a deleted stream");
        }
        for (_, wake) in listeners {
            wake();
        }
    }
}
