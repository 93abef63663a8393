//! Tributary's embedded durable message store.
//!
//! One append-only segment log shared by every durable queue (a message body is written once,
//! whatever number of queues it was routed to), group-committed by one plain OS thread: appends go
//! into an in-memory buffer under a short mutex; the sync thread swaps the buffer out, writes it,
//! runs `fdatasync`, and only then calls the [`Store::on_durable`] callbacks registered before the
//! swap, handing each a [`Durable`] token. While it syncs, new appends accumulate for the next batch.
//!
//! Space is reclaimed by deleting whole dead segments (oldest first) and by compacting a mostly
//! dead oldest segment (its live publish records are copied to the head, then it is deleted).
//! Metadata lives in `meta.redb`. The on-disk format is described in `FORMAT.md`.
//!
//! ```no_run
//! # use tributary_store::*;
//! let (store, recovery) = Store::open("data".as_ref(), StoreOptions::default()).unwrap();
//! let id = store.next_msg_id();
//! store.append_publish(id, &[1, 2], b"body");
//! store.on_durable(Box::new(move |_proof: Durable| println!("confirm {id}")));
//! # drop(recovery);
//! ```

mod meta;
mod raft;
mod record;
mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::raft::RaftLog;

/// One change of [`Store::meta_apply`].
#[derive(Debug, Clone, Copy)]
pub enum MetaOp<'a> {
    /// Stores `value` under `key` in `table`.
    Put {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// Deletes `key` from `table` (absent keys are fine).
    Delete {
        /// The table.
        table: &'a str,
        /// The key.
        key: &'a str,
    },
}

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use crate::record::{
    CHECKPOINT_SIZE, PAIR_SIZE, QUEUE_DELETED_SIZE, T_ACK, T_CHECKPOINT, T_DELIVERED,
    T_QUEUE_DELETED,
};

/// Contents of the `FORMAT` file.
pub const FORMAT_VERSION: &str = "tributary-store 1";
/// Largest payload [`Store::append_publish`] accepts.
pub const MAX_PAYLOAD: usize = (1 << 30) - (1 << 20);
/// Compaction rewrites the oldest segment when its live bytes fall below 1/N of its size.
const COMPACT_BELOW_FRACTION: u64 = 4;

/// Options for [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// A segment is closed and a new one started once the next record would pass this size
    /// (a single larger record gets a segment of its own). Default 64 MiB.
    pub segment_size: u64,
    /// `fdatasync` each batch. `false` only for tests that do not care about power loss.
    pub sync: bool,
    /// Read every live payload into [`RecoveredMessage::payload`] at open. With
    /// `false` payloads are left empty and read back with [`Store::read`] by
    /// location, so recovery needs memory for the index only.
    pub load_payloads: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            segment_size: 64 << 20,
            sync: true,
            load_payloads: true,
        }
    }
}

/// Where a publish record's payload lives, so a paged-out body can be read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u64,
    /// Byte offset of the payload inside the segment file.
    pub offset: u64,
    pub len: u32,
}

/// Proof that data is on disk: minted only by the sync thread after `fdatasync` returned.
///
/// It cannot be constructed outside this crate, so code that requires one to send a publisher
/// confirm cannot confirm anything that is not durable.
#[derive(Debug)]
pub struct Durable {
    batch: u64,
}

impl Durable {
    /// The number of the group-commit batch that made the data durable (for logs and tests).
    pub fn batch(&self) -> u64 {
        self.batch
    }
}

/// Errors from the store. Damaged records are never an error (they are reported in
/// [`RecoveryReport`]); these are environment failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds format {found:?}, this build reads {FORMAT_VERSION:?}")]
    Format { path: PathBuf, found: String },
    #[error("the store directory is in use by another process or Store")]
    Locked,
    #[error("metadata store: {0}")]
    Meta(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no payload at {0:?} (message gone or location invalid)")]
    NotFound(Location),
    #[error("payload of {0} bytes is larger than the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    /// A write or fsync failed earlier; nothing appended since is durable (the store never
    /// retries an fsync: after a failure the page cache state is unknown).
    #[error("the store failed and accepts no more writes: {0}")]
    Failed(String),
    #[error("the store is closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Upper bounds, in microseconds, of the buckets of the `fdatasync`
/// latency histogram in [`StoreStats::fsync_buckets`].
pub const FSYNC_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counters, for the management API and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Segments that exist (including the head segment).
    pub segments: u64,
    /// Bytes written to segment files that still exist.
    pub bytes_on_disk: u64,
    /// Messages still in at least one queue.
    pub live_messages: u64,
    /// Bytes of their publish records.
    pub live_bytes: u64,
    /// Bytes appended but not yet handed to the sync thread.
    pub pending_bytes: u64,
    /// `fdatasync` calls on segment files.
    pub fsyncs: u64,
    /// Bytes written to segment files since the store was opened (also of
    /// segments deleted since).
    pub bytes_written: u64,
    /// How long `fdatasync` calls took: counts per [`FSYNC_BUCKETS_US`]
    /// bucket (not cumulative), the last one for slower calls.
    pub fsync_buckets: [u64; FSYNC_BUCKETS_US.len() + 1],
    /// Total time spent in `fdatasync` calls, in microseconds.
    pub fsync_micros: u64,
    /// Group-commit passes of the sync thread.
    pub batches: u64,
    /// Records appended through the public API (publish, ack, delivered, queue deleted).
    pub appends: u64,
    pub segments_deleted: u64,
    pub segments_compacted: u64,
    /// Publish records copied to the head by compaction.
    pub records_moved: u64,
    /// A write or fsync failed; see [`StoreError::Failed`].
    pub failed: bool,
}

/// What [`Store::open`] found on disk.
#[derive(Debug)]
#[non_exhaustive]
pub struct Recovery {
    /// Live messages per queue, in original publish order.
    pub queues: HashMap<u64, Vec<RecoveredMessage>>,
    /// The previous run ended with [`Store::close`].
    pub clean_shutdown: bool,
    pub report: RecoveryReport,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredMessage {
    pub msg_id: u64,
    pub location: Location,
    pub payload: Bytes,
    /// A `Delivered` record was seen for this queue, or the shutdown was not clean.
    pub delivered: bool,
}

/// One damaged place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDamage {
    pub segment: u64,
    pub offset: u64,
    /// Bytes affected (dropped, skipped, or left unread).
    pub bytes: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    pub segments: u64,
    /// Valid records read.
    pub records: u64,
    /// Torn tail cut off the last segment (a crash during a write; never-confirmed data).
    pub truncated: Vec<LogDamage>,
    /// Records with a bad CRC (or undecodable payload) in the middle, skipped.
    pub corrupt: Vec<LogDamage>,
    /// Segments other than the last whose scan ended early (bad length): the rest is unread.
    pub scan_stopped: Vec<LogDamage>,
    pub live_messages: u64,
    pub next_msg_id: u64,
    pub duration: Duration,
}

type Callback = Box<dyn FnOnce(Durable) + Send>;

struct Chunk {
    segment: u64,
    offset: u64,
    data: Vec<u8>,
}

#[derive(Default, Clone, Debug)]
pub(crate) struct SegInfo {
    /// Logical size: bytes appended (written or not).
    size: u64,
    live: u64,
    live_bytes: u64,
}

/// Index entry of a live message.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    segment: u64,
    record_off: u64,
    body_off: u64,
    len: u32,
    record_len: u64,
    /// Position of the original publish record: the queue order key.
    origin: (u64, u64),
    /// Queues it is still in, with "a Delivered record was written".
    queues: Vec<(u64, bool)>,
    /// Older (segment, body offset) locations, kept readable after compaction moved it.
    aliases: Vec<(u64, u64)>,
}

struct Inner {
    pending: Vec<Chunk>,
    pending_bytes: u64,
    spare: Vec<Vec<u8>>,
    callbacks: Vec<Callback>,
    inflight: Option<Arc<Vec<Chunk>>>,
    head_segment: u64,
    head_offset: u64,
    segments: BTreeMap<u64, SegInfo>,
    msgs: HashMap<u64, Entry>,
    aliases: HashMap<(u64, u64), u64>,
    sync_waiting: bool,
    housekeeping: bool,
    compact_requested: bool,
    stop_sync: bool,
    stop_compactor: bool,
    closed: bool,
    failed: Option<String>,
    appends: u64,
}

struct Shared {
    log_dir: PathBuf,
    options: StoreOptions,
    inner: Mutex<Inner>,
    work: Condvar,
    compact: Condvar,
    next_msg_id: AtomicU64,
    readers: Mutex<HashMap<u64, Arc<File>>>,
    fsyncs: AtomicU64,
    bytes_written: AtomicU64,
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS_US.len() + 1],
    fsync_micros: AtomicU64,
    batches: AtomicU64,
    bytes_on_disk: AtomicU64,
    segments_deleted: AtomicU64,
    segments_compacted: AtomicU64,
    records_moved: AtomicU64,
}

/// The durable store. Cheap `&self` methods; share it behind the `Arc` that [`Store::open`]
/// returns.
pub struct Store {
    shared: Arc<Shared>,
    dir: PathBuf,
    /// `None` after [`Store::close`], which releases the redb file lock.
    meta: parking_lot::RwLock<Option<meta::Meta>>,
    threads: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Inner {
    /// Reserves space for a record of `rec_len` bytes at the head, rotating the segment and
    /// writing a checkpoint record first when needed. Returns (segment, offset).
    fn reserve(&mut self, shared: &Shared, rec_len: u64) -> (u64, u64) {
        if self.head_offset > 0 && self.head_offset + rec_len > shared.options.segment_size {
            self.head_segment += 1;
            self.head_offset = 0;
        }
        if self.head_offset == 0 {
            self.segments.entry(self.head_segment).or_default();
            let next = shared.next_msg_id.load(Relaxed);
            let (seg, off) = (self.head_segment, self.head_offset);
            record::encode_u64(self.buf_at(seg, off), T_CHECKPOINT, next);
            self.advance(CHECKPOINT_SIZE);
        }
        (self.head_segment, self.head_offset)
    }

    fn buf_at(&mut self, segment: u64, offset: u64) -> &mut Vec<u8> {
        let extend = matches!(self.pending.last(),
            Some(c) if c.segment == segment && c.offset + c.data.len() as u64 == offset);
        if !extend {
            let data = self.spare.pop().unwrap_or_default();
            self.pending.push(Chunk {
                segment,
                offset,
                data,
            });
        }
        let n = self.pending.len() - 1;
        &mut self.pending[n].data
    }

    fn advance(&mut self, n: u64) {
        self.head_offset += n;
        self.pending_bytes += n;
        if let Some(s) = self.segments.get_mut(&self.head_segment) {
            s.size += n;
        }
    }

    fn link(&mut self, msg_id: u64, e: Entry) {
        if let Some(s) = self.segments.get_mut(&e.segment) {
            s.live += 1;
            s.live_bytes += e.record_len;
        }
        for a in &e.aliases {
            self.aliases.insert(*a, msg_id);
        }
        if let Some(old) = self.msgs.insert(msg_id, e) {
            self.unlink_counts(&old);
        }
    }

    fn unlink_counts(&mut self, e: &Entry) {
        if let Some(s) = self.segments.get_mut(&e.segment) {
            s.live = s.live.saturating_sub(1);
            s.live_bytes = s.live_bytes.saturating_sub(e.record_len);
        }
    }

    fn kill(&mut self, msg_id: u64) {
        if let Some(e) = self.msgs.remove(&msg_id) {
            self.unlink_counts(&e);
            for a in &e.aliases {
                self.aliases.remove(a);
            }
        }
    }

    /// Removes the fully dead prefix of segments (never the head) from the map.
    fn take_dead_prefix(&mut self) -> Vec<(u64, u64)> {
        let mut dead = Vec::new();
        while let Some((&id, s)) = self.segments.iter().next() {
            if id >= self.head_segment || s.live > 0 {
                break;
            }
            dead.push((id, s.size));
            self.segments.remove(&id);
        }
        dead
    }

    fn compaction_target(&self) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        let (&id, s) = self.segments.iter().next()?;
        let written = self.pending.iter().all(|c| c.segment > id)
            && self
                .inflight
                .as_ref()
                .is_none_or(|chunks| chunks.iter().all(|c| c.segment > id));
        (id < self.head_segment
            && written
            && s.live > 0
            && s.live_bytes * COMPACT_BELOW_FRACTION < s.size)
            .then_some(id)
    }

    fn find_in_memory(&self, loc: Location) -> Option<Bytes> {
        let inflight = self.inflight.iter().flat_map(|c| c.iter());
        for c in self.pending.iter().chain(inflight) {
            if c.segment == loc.segment
                && loc.offset >= c.offset
                && loc.offset + loc.len as u64 <= c.offset + c.data.len() as u64
            {
                let start = (loc.offset - c.offset) as usize;
                return Some(Bytes::copy_from_slice(
                    &c.data[start..start + loc.len as usize],
                ));
            }
        }
        None
    }
}

/// Wakes the sync thread if it sleeps. Call with the lock held (the flag is read under it).
fn wake(shared: &Shared, inner: &Inner) {
    if inner.sync_waiting {
        shared.work.notify_one();
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering the log. Damaged records never make
    /// this fail; they are truncated or skipped and listed in the [`RecoveryReport`].
    pub fn open(dir: &Path, options: StoreOptions) -> Result<(Arc<Store>, Recovery), StoreError> {
        let options = StoreOptions {
            segment_size: options.segment_size.max(1),
            ..options
        };
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        // Opening redb first also locks the directory against a second opener.
        let meta = meta::Meta::open(&dir.join("meta.redb"))?;

        let format_path = dir.join("FORMAT");
        match fs::read_to_string(&format_path) {
            Ok(s) if s.trim_end() == FORMAT_VERSION => {}
            Ok(s) => {
                return Err(StoreError::Format {
                    path: format_path,
                    found: s.trim_end().to_string(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = dir.join("FORMAT.tmp");
                fs::write(&tmp, format!("{FORMAT_VERSION}\n")).map_err(io_err(&tmp))?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(&tmp))?;
                fs::rename(&tmp, &format_path).map_err(io_err(&format_path))?;
                sync_dir(dir)?;
            }
            Err(e) => return Err(io_err(&format_path)(e)),
        }

        let clean_path = dir.join("CLEAN");
        let clean = clean_path.exists();
        if clean {
            fs::remove_file(&clean_path).map_err(io_err(&clean_path))?;
            sync_dir(dir)?;
        }

        let rec = recovery::recover(&log_dir, clean, options.load_payloads)?;
        let head = rec.last_segment + 1;
        let shared = Arc::new(Shared {
            log_dir,
            options,
            inner: Mutex::new(Inner {
                pending: Vec::new(),
                pending_bytes: 0,
                spare: Vec::new(),
                callbacks: Vec::new(),
                inflight: None,
                head_segment: head,
                head_offset: 0,
                segments: rec.segments,
                msgs: rec.msgs,
                aliases: HashMap::new(),
                sync_waiting: false,
                housekeeping: true,
                compact_requested: false,
                stop_sync: false,
                stop_compactor: false,
                closed: false,
                failed: None,
                appends: 0,
            }),
            work: Condvar::new(),
            compact: Condvar::new(),
            next_msg_id: AtomicU64::new(rec.next_msg_id),
            readers: Mutex::new(HashMap::new()),
            fsyncs: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            fsync_buckets: Default::default(),
            fsync_micros: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            bytes_on_disk: AtomicU64::new(rec.bytes),
            segments_deleted: AtomicU64::new(0),
            segments_compacted: AtomicU64::new(0),
            records_moved: AtomicU64::new(0),
        });
        {
            // Start the head segment now with a checkpoint of the id counter, so the counter
            // survives even if every older segment is deleted before anything else is appended.
            let mut g = shared.inner.lock();
            g.reserve(&shared, 0);
        }
        let s1 = shared.clone();
        let sync_thread = std::thread::Builder::new()
            .name("tributary-store-sync".into())
            .spawn(move || sync_loop(&s1))
            .map_err(io_err(dir))?;
        let s2 = shared.clone();
        let compact_thread = std::thread::Builder::new()
            .name("tributary-store-compact".into())
            .spawn(move || compact_loop(&s2))
            .map_err(io_err(dir))?;
        let store = Store {
            shared,
            dir: dir.to_path_buf(),
            meta: parking_lot::RwLock::new(Some(meta)),
            threads: Mutex::new(Some((sync_thread, compact_thread))),
        };
        Ok((Arc::new(store), rec.recovery))
    }

    /// A fresh message id: monotonic, continues after recovery.
    pub fn next_msg_id(&self) -> u64 {
        self.shared.next_msg_id.fetch_add(1, Relaxed)
    }

    /// Appends a publish record: `payload` is written once for all `queues`.
    ///
    /// # Panics
    /// If `payload` is larger than [`MAX_PAYLOAD`]; use [`Store::try_append_publish`] to get an
    /// error instead (the broker should enforce a smaller max message size anyway).
    pub fn append_publish(&self, msg_id: u64, queues: &[u64], payload: &[u8]) -> Location {
        match self.try_append_publish(msg_id, queues, payload) {
            Ok(l) => l,
            Err(e) => panic!("append_publish: {e}"),
        }
    }

    /// [`Store::append_publish`] that rejects oversized payloads with [`StoreError::TooLarge`].
    /// After [`Store::close`] the record is dropped and a location that reads as `NotFound` is
    /// returned.
    pub fn try_append_publish(
        &self,
        msg_id: u64,
        queues: &[u64],
        payload: &[u8],
    ) -> Result<Location, StoreError> {
        if payload.len() > MAX_PAYLOAD || queues.len() > 1 << 20 {
            return Err(StoreError::TooLarge(payload.len()));
        }
        let (rec_len, body_off) = record::publish_size(queues.len(), payload.len());
        let len = payload.len() as u32;
        let mut g = self.shared.inner.lock();
        if g.closed {
            return Ok(Location {
                segment: 0,
                offset: 0,
                len,
            });
        }
        let (seg, off) = g.reserve(&self.shared, rec_len);
        record::encode_publish(g.buf_at(seg, off), msg_id, queues, payload);
        g.advance(rec_len);
        g.appends += 1;
        let mut qs: Vec<(u64, bool)> = Vec::with_capacity(queues.len());
        for &q in queues {
            if !qs.iter().any(|(x, _)| *x == q) {
                qs.push((q, false));
            }
        }
        if qs.is_empty() {
            g.kill(msg_id);
        } else {
            g.link(
                msg_id,
                Entry {
                    segment: seg,
                    record_off: off,
                    body_off: off + body_off,
                    len,
                    record_len: rec_len,
                    origin: (seg, off),
                    queues: qs,
                    aliases: Vec::new(),
                },
            );
        }
        wake(&self.shared, &g);
        Ok(Location {
            segment: seg,
            offset: off + body_off,
            len,
        })
    }

    fn append_small(&self, ty: u8, rec_len: u64, a: u64, b: u64) {
        let mut g = self.shared.inner.lock();
        if g.closed {
            return;
        }
        // Acks and Delivered for pairs the index does not hold are not written at all.
        let wanted = match ty {
            T_ACK => g
                .msgs
                .get(&b)
                .is_some_and(|e| e.queues.iter().any(|q| q.0 == a)),
            T_DELIVERED => g
                .msgs
                .get(&b)
                .is_some_and(|e| e.queues.iter().any(|q| q.0 == a && !q.1)),
            _ => true,
        };
        if !wanted {
            return;
        }
        let (seg, off) = g.reserve(&self.shared, rec_len);
        let buf = g.buf_at(seg, off);
        if ty == T_QUEUE_DELETED {
            record::encode_u64(buf, ty, a);
        } else {
            record::encode_pair(buf, ty, a, b);
        }
        g.advance(rec_len);
        g.appends += 1;
        match ty {
            T_ACK => {
                if let Some(e) = g.msgs.get_mut(&b) {
                    e.queues.retain(|(q, _)| *q != a);
                    if e.queues.is_empty() {
                        g.kill(b);
                    }
                }
            }
            T_DELIVERED => {
                if let Some(e) = g.msgs.get_mut(&b) {
                    for q in e.queues.iter_mut().filter(|q| q.0 == a) {
                        q.1 = true;
                    }
                }
            }
            _ => {
                let mut dead = Vec::new();
                for (id, e) in g.msgs.iter_mut() {
                    e.queues.retain(|(q, _)| *q != a);
                    if e.queues.is_empty() {
                        dead.push(*id);
                    }
                }
                for id in dead {
                    g.kill(id);
                }
            }
        }
        wake(&self.shared, &g);
    }

    /// The message left `queue` (acked, or dropped). Unknown pairs are ignored (nothing written).
    pub fn append_ack(&self, queue: u64, msg_id: u64) {
        self.append_small(T_ACK, PAIR_SIZE, queue, msg_id);
    }

    /// The message was handed to a consumer of `queue` (so it is redelivered after a restart).
    /// Unknown pairs, and pairs already marked, are ignored.
    pub fn append_delivered(&self, queue: u64, msg_id: u64) {
        self.append_small(T_DELIVERED, PAIR_SIZE, queue, msg_id);
    }

    /// The queue is gone: every message in it leaves it. Cost: a scan of the live index.
    pub fn append_queue_deleted(&self, queue: u64) {
        self.append_small(T_QUEUE_DELETED, QUEUE_DELETED_SIZE, queue, 0);
    }

    /// Calls `done` from the sync thread once everything appended before this call is fsynced.
    ///
    /// `done` must be quick and must not call [`Store::sync`] (it runs on the sync thread). If
    /// the store fails (a write or fsync error) or is closed, `done` is dropped without being
    /// called: nothing is ever reported durable that is not.
    pub fn on_durable(&self, done: Box<dyn FnOnce(Durable) + Send>) {
        let mut g = self.shared.inner.lock();
        if g.closed || g.failed.is_some() {
            return;
        }
        g.callbacks.push(done);
        wake(&self.shared, &g);
    }

    /// Blocks until everything appended so far is durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        {
            let g = self.shared.inner.lock();
            if let Some(f) = &g.failed {
                return Err(StoreError::Failed(f.clone()));
            }
            if g.closed {
                return Ok(());
            }
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.on_durable(Box::new(move |_| {
            let _ = tx.send(());
        }));
        rx.recv().map_err(|_| self.failure())
    }

    fn failure(&self) -> StoreError {
        let g = self.shared.inner.lock();
        match &g.failed {
            Some(f) => StoreError::Failed(f.clone()),
            None => StoreError::Closed,
        }
    }

    /// Reads a publish payload back. Works for records still in the write buffer, and for
    /// locations whose record compaction has since moved.
    pub fn read(&self, location: Location) -> Result<Bytes, StoreError> {
        let loc = {
            let g = self.shared.inner.lock();
            let mut loc = location;
            if let Some(e) = g
                .aliases
                .get(&(loc.segment, loc.offset))
                .and_then(|id| g.msgs.get(id))
            {
                loc = Location {
                    segment: e.segment,
                    offset: e.body_off,
                    len: e.len,
                };
            }
            if let Some(b) = g.find_in_memory(loc) {
                return Ok(b);
            }
            match g.segments.get(&loc.segment) {
                Some(s) if loc.offset + loc.len as u64 <= s.size => {}
                _ => return Err(StoreError::NotFound(location)),
            }
            loc
        };
        let file = self.reader(loc.segment, location)?;
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(|_| StoreError::NotFound(location))?;
        Ok(Bytes::from(buf))
    }

    fn reader(&self, segment: u64, location: Location) -> Result<Arc<File>, StoreError> {
        let mut readers = self.shared.readers.lock();
        if let Some(f) = readers.get(&segment) {
            return Ok(f.clone());
        }
        let path = self.shared.log_dir.join(segment_name(segment));
        let f = Arc::new(File::open(&path).map_err(|_| StoreError::NotFound(location))?);
        readers.insert(segment, f.clone());
        Ok(f)
    }

    /// Stores `value` under `key` in `table` (one durable redb transaction).
    pub fn meta_put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta
            .read()
            .as_ref()
            .ok_or(StoreError::Closed)?
            .put(table, key, value)
    }

    /// Applies several puts and deletes, in order, as one durable redb
    /// transaction: one fsync for the lot instead of one each.
    pub fn meta_apply(&self, ops: &[MetaOp<'_>]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.meta
            .read()
            .as_ref()
            .ok_or(StoreError::Closed)?
            .apply(ops)
    }

    /// Deletes `key` from `table` (absent keys are fine).
    pub fn meta_delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        self.meta
            .read()
            .as_ref()
            .ok_or(StoreError::Closed)?
            .delete(table, key)
    }

    /// The Raft log kept in `meta.redb` (the cluster's metadata group).
    pub fn raft_log(&self) -> RaftLog<'_> {
        RaftLog { store: self }
    }

    /// All rows of `table`, ordered by key (empty if the table does not exist).
    pub fn meta_list(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.meta
            .read()
            .as_ref()
            .ok_or(StoreError::Closed)?
            .list(table)
    }

    pub fn stats(&self) -> StoreStats {
        let s = &self.shared;
        let g = s.inner.lock();
        StoreStats {
            segments: g.segments.len() as u64,
            bytes_on_disk: s.bytes_on_disk.load(Relaxed),
            live_messages: g.msgs.len() as u64,
            live_bytes: g.segments.values().map(|x| x.live_bytes).sum(),
            pending_bytes: g.pending_bytes,
            fsyncs: s.fsyncs.load(Relaxed),
            bytes_written: s.bytes_written.load(Relaxed),
            fsync_buckets: std::array::from_fn(|i| s.fsync_buckets[i].load(Relaxed)),
            fsync_micros: s.fsync_micros.load(Relaxed),
            batches: s.batches.load(Relaxed),
            appends: g.appends,
            segments_deleted: s.segments_deleted.load(Relaxed),
            segments_compacted: s.segments_compacted.load(Relaxed),
            records_moved: s.records_moved.load(Relaxed),
            failed: g.failed.is_some(),
        }
    }

    /// Flushes and fsyncs everything, stops the threads, closes `meta.redb` and writes the
    /// clean-shutdown marker. Later appends are dropped, later `meta_*` calls fail with
    /// [`StoreError::Closed`]. Idempotent. The directory can be opened again right away.
    pub fn close(&self) -> Result<(), StoreError> {
        let first = {
            let mut g = self.shared.inner.lock();
            let first = !g.closed;
            g.closed = true;
            first
        };
        self.stop_threads();
        // Releases meta.redb (and with it the directory lock).
        self.meta.write().take();
        if let Some(f) = &self.shared.inner.lock().failed {
            return Err(StoreError::Failed(f.clone()));
        }
        if first {
            let path = self.dir.join("CLEAN");
            File::create(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn stop_threads(&self) {
        let Some((sync_thread, compact_thread)) = self.threads.lock().take() else {
            return;
        };
        {
            let mut g = self.shared.inner.lock();
            g.stop_compactor = true;
            self.shared.compact.notify_all();
        }
        let _ = compact_thread.join();
        {
            let mut g = self.shared.inner.lock();
            g.stop_sync = true;
            self.shared.work.notify_all();
        }
        let _ = sync_thread.join();
    }
}

impl Drop for Store {
    /// Without [`Store::close`]: flushes what was appended but leaves no clean marker.
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The sync thread's open segment files.
struct Writer {
    files: BTreeMap<u64, File>,
}

impl Writer {
    fn write(&mut self, shared: &Shared, chunks: &[Chunk]) -> Result<(), StoreError> {
        let mut touched: Vec<u64> = Vec::new();
        let mut created = false;
        for c in chunks {
            let file = match self.files.entry(c.segment) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let path = shared.log_dir.join(segment_name(c.segment));
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    created = true;
                    v.insert(f)
                }
            };
            file.write_all_at(&c.data, c.offset)
                .map_err(|e| io_err(&shared.log_dir.join(segment_name(c.segment)))(e))?;
            shared.bytes_on_disk.fetch_add(c.data.len() as u64, Relaxed);
            shared.bytes_written.fetch_add(c.data.len() as u64, Relaxed);
            if !touched.contains(&c.segment) {
                touched.push(c.segment);
            }
        }
        if shared.options.sync {
            for s in &touched {
                if let Some(f) = self.files.get(s) {
                    let started = std::time::Instant::now();
                    f.sync_data()
                        .map_err(|e| io_err(&shared.log_dir.join(segment_name(*s)))(e))?;
                    shared.fsyncs.fetch_add(1, Relaxed);
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let bucket = FSYNC_BUCKETS_US.partition_point(|&b| b < us);
                    shared.fsync_buckets[bucket].fetch_add(1, Relaxed);
                    shared.fsync_micros.fetch_add(us, Relaxed);
                }
            }
            if created {
                sync_dir(&shared.log_dir)?;
            }
        }
        // Keep only the newest file open: older segments get no more writes.
        if let Some(&newest) = self.files.keys().next_back() {
            self.files.retain(|&k, _| k == newest);
        }
        Ok(())
    }
}

fn sync_loop(shared: &Shared) {
    let mut writer = Writer {
        files: BTreeMap::new(),
    };
    loop {
        let mut g = shared.inner.lock();
        while g.pending.is_empty() && g.callbacks.is_empty() && !g.housekeeping {
            if g.stop_sync {
                return;
            }
            g.sync_waiting = true;
            shared.work.wait(&mut g);
            g.sync_waiting = false;
        }
        g.housekeeping = false;
        let chunks = Arc::new(std::mem::take(&mut g.pending));
        g.pending_bytes = 0;
        if !chunks.is_empty() {
            g.inflight = Some(chunks.clone());
        }
        let callbacks = std::mem::take(&mut g.callbacks);
        let dead = if g.failed.is_none() {
            g.take_dead_prefix()
        } else {
            Vec::new()
        };
        let failed = g.failed.is_some();
        drop(g);
        if failed {
            // Never write or report anything after a failure.
            drop(callbacks);
            continue;
        }

        let result = if chunks.is_empty() {
            Ok(())
        } else {
            writer.write(shared, &chunks)
        };
        let batch = shared.batches.fetch_add(1, Relaxed) + 1;
        {
            let mut g = shared.inner.lock();
            g.inflight = None;
            if let Ok(chunks) = Arc::try_unwrap(chunks) {
                for mut c in chunks {
                    if g.spare.len() < 4 && c.data.capacity() <= 4 << 20 {
                        c.data.clear();
                        g.spare.push(c.data);
                    }
                }
            }
            if let Err(e) = &result {
                g.failed = Some(e.to_string());
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "store write/fsync failed; the store accepts no more writes");
            drop(callbacks);
            continue;
        }
        for cb in callbacks {
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(Durable { batch })));
            if r.is_err() {
                tracing::error!("an on_durable callback panicked");
            }
        }
        delete_segments(shared, &dead);
        let mut g = shared.inner.lock();
        if !g.stop_compactor && g.compaction_target().is_some() {
            g.compact_requested = true;
            shared.compact.notify_one();
        }
    }
}

/// Deletes dead segments oldest first, syncing the directory after each unlink so a crash can
/// never resurrect an older segment whose acks lived in a newer, already deleted one.
fn delete_segments(shared: &Shared, dead: &[(u64, u64)]) {
    for &(id, size) in dead {
        shared.readers.lock().remove(&id);
        let path = shared.log_dir.join(segment_name(id));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a dead segment");
                continue;
            }
        }
        if shared.options.sync
            && let Err(e) = sync_dir(&shared.log_dir)
        {
            tracing::warn!(error = %e, "directory fsync after segment deletion failed");
        }
        shared
            .bytes_on_disk
            .fetch_sub(size.min(shared.bytes_on_disk.load(Relaxed)), Relaxed);
        shared.segments_deleted.fetch_add(1, Relaxed);
        tracing::debug!(segment = id, "deleted dead segment");
    }
}

fn compact_loop(shared: &Shared) {
    loop {
        let target = {
            let mut g = shared.inner.lock();
            loop {
                if g.stop_compactor {
                    return;
                }
                if g.compact_requested {
                    g.compact_requested = false;
                    if let Some(t) = g.compaction_target() {
                        break t;
                    }
                }
                shared.compact.wait(&mut g);
            }
        };
        if let Err(e) = compact_segment(shared, target) {
            tracing::warn!(segment = target, error = %e, "compaction failed");
        }
    }
}

/// Copies the live publish records of `target` to the head as `Moved` records. The segment
/// becomes dead and is deleted by the sync thread once the copies are durable.
fn compact_segment(shared: &Shared, target: u64) -> Result<(), StoreError> {
    let path = shared.log_dir.join(segment_name(target));
    let data = fs::read(&path).map_err(io_err(&path))?;
    let mut moved = 0u64;
    record::scan(&data, |off, _, rec| {
        let (msg_id, body) = match rec {
            record::Record::Publish { msg_id, body, .. }
            | record::Record::Moved { msg_id, body, .. } => (msg_id, body),
            _ => return,
        };
        let mut g = shared.inner.lock();
        if g.stop_compactor || g.failed.is_some() {
            return;
        }
        let Some(e) = g.msgs.get(&msg_id) else { return };
        if e.segment != target || e.record_off != off {
            return;
        }
        let (queues, origin, old) = (e.queues.clone(), e.origin, (e.segment, e.body_off));
        let mut aliases = e.aliases.clone();
        aliases.push(old);
        let (rec_len, body_off) = record::moved_size(queues.len(), body.len());
        let (seg, o) = g.reserve(shared, rec_len);
        record::encode_moved(g.buf_at(seg, o), msg_id, origin, &queues, body);
        g.advance(rec_len);
        g.link(
            msg_id,
            Entry {
                segment: seg,
                record_off: o,
                body_off: o + body_off,
                len: body.len() as u32,
                record_len: rec_len,
                origin,
                queues,
                aliases,
            },
        );
        wake(shared, &g);
        moved += 1;
    });
    shared.records_moved.fetch_add(moved, Relaxed);
    shared.segments_compacted.fetch_add(1, Relaxed);
    tracing::debug!(segment = target, moved, "compacted segment");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<Arc<Store>>();
    }
}
