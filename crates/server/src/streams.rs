//! Stream queues on disk: the `tributary-stream` logs behind the core's `StreamLog` seam, one
//! directory per stream under `<store>/streams/<queue id>/` (queue ids are unique across
//! vhosts and never reused while a directory may exist), all synced by one group-commit thread.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tributary_core::stream::{
    StreamCursor, StreamLog, StreamRecord, StreamSettings, StreamStart, StreamStats,
};
use tributary_stream::{NewRecord, Reader, Start, Stream, StreamOptions, Syncer};

/// Every stream of the broker.
pub struct Streams {
    root: PathBuf,
    syncer: Arc<Syncer>,
    opened: Mutex<HashSet<PathBuf>>,
}

impl Streams {
    /// Streams under `root`, synced with `fdatasync` unless `sync` is false.
    pub fn new(root: PathBuf, sync: bool) -> Self {
        Streams {
            root,
            syncer: Syncer::start(sync),
            opened: Mutex::new(HashSet::new()),
        }
    }

    /// Opens (or creates) a stream's log.
    pub fn open(
        &self,
        vhost: u64,
        queue: u64,
        settings: &StreamSettings,
    ) -> Option<Arc<dyn StreamLog>> {
        let dir = self.root.join(queue.to_string());
        let options = StreamOptions {
            max_segment_bytes: settings.max_segment_bytes,
            max_bytes: settings.max_bytes,
            max_age_ms: settings.max_age_ms,
            ..StreamOptions::default()
        };
        match Stream::open(&dir, options, &self.syncer) {
            Ok((stream, report)) => {
                if report.truncated_bytes > 0 || !report.damaged_segments.is_empty() {
                    tracing::warn!(dir = %dir.display(), truncated = report.truncated_bytes, damaged = ?report.damaged_segments, "stream recovered with damage");
                }
                tracing::debug!(dir = %dir.display(), vhost, records = report.records, segments = report.segments, "stream opened");
                self.opened.lock().insert(dir);
                Some(Arc::new(Log { stream }))
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open a stream");
                None
            }
        }
    }

    /// Calls `done` once every stream's appends so far are durable.
    pub fn barrier(&self, done: Box<dyn FnOnce() + Send>) {
        self.syncer.barrier(done);
    }

    /// Removes stream directories no restored queue opened (their queue was deleted but the
    /// broker stopped before the directory was removed, or their vhost is gone).
    pub fn remove_orphans(&self) {
        let opened = self.opened.lock();
        for stream in read_dirs(&self.root) {
            if !opened.contains(&stream) {
                tracing::info!(dir = %stream.display(), "removing the log of a deleted stream");
                if let Err(e) = std::fs::remove_dir_all(&stream) {
                    tracing::warn!(dir = %stream.display(), error = %e, "cannot remove a stream directory");
                }
            }
        }
    }
}

fn read_dirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// One stream as the core sees it.
struct Log {
    stream: Arc<Stream>,
}

impl StreamLog for Log {
    fn append(&self, timestamp_ms: i64, filter: Option<&[u8]>, payload: &[u8]) -> Option<u64> {
        let record = NewRecord {
            timestamp_ms,
            filter,
            payload,
        };
        self.stream
            .append(&[record])
            .map_err(|e| tracing::error!(dir = %self.stream.dir().display(), error = %e, "cannot append to a stream"))
            .ok()
    }

    fn when_durable(&self, done: Box<dyn FnOnce() + Send>) {
        self.stream.on_durable(done);
    }

    fn on_commit(&self, offset: u64, wake: Box<dyn FnOnce() + Send>) {
        self.stream.on_commit(offset, wake);
    }

    fn reader(&self, start: StreamStart) -> Box<dyn StreamCursor> {
        let start = match start {
            StreamStart::First => Start::First,
            StreamStart::Last => Start::Last,
            StreamStart::Next => Start::Next,
            StreamStart::Offset(o) => Start::Offset(o),
            StreamStart::Timestamp(t) => Start::Timestamp(t),
        };
        Box::new(Cursor(self.stream.reader(start)))
    }

    fn stats(&self) -> StreamStats {
        let i = self.stream.info();
        StreamStats {
            first_offset: i.first_offset,
            committed: i.committed,
            records: i.records,
            bytes: i.bytes,
        }
    }

    fn tick(&self, now_ms: u64) {
        self.stream.enforce_retention(now_ms as i64);
    }

    fn destroy(&self) {
        self.stream.destroy();
    }

    fn is_destroyed(&self) -> bool {
        self.stream.is_closed()
    }
}

struct Cursor(Reader);

impl StreamCursor for Cursor {
    fn next_offset(&self) -> u64 {
        self.0.next_offset()
    }

    fn read(&mut self, max_records: usize, max_bytes: usize) -> Vec<StreamRecord> {
        match self.0.read(max_records, max_bytes) {
            Ok(records) => records
                .into_iter()
                .map(|r| StreamRecord {
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    filter: r.filter,
                    payload: r.payload,
                })
                .collect(),
            Err(e) => {
                tracing::error!(dir = %self.0.stream().dir().display(), error = %e, "cannot read a stream");
                Vec::new()
            }
        }
    }
}
