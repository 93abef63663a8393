//! Group commit: one thread writes and fsyncs the buffered appends of every stream that has
//! some, then runs their durability callbacks and wakes their readers.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use crate::segment::file_name;
use crate::{Stream, StreamError, io_err};

#[derive(Default)]
struct Queue {
    streams: Vec<Arc<Stream>>,
    barriers: Vec<Box<dyn FnOnce() + Send>>,
    stop: bool,
}

/// The sync thread shared by a set of streams.
pub struct Syncer {
    queue: Mutex<Queue>,
    work: Condvar,
    sync: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer").field("sync", &self.sync).finish()
    }
}

impl Syncer {
    /// Starts the sync thread. `sync = false` skips `fdatasync` (tests that do not care about
    /// power loss only).
    pub fn start(sync: bool) -> Arc<Syncer> {
        let syncer = Arc::new(Syncer {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            sync,
            thread: Mutex::new(None),
        });
        let me = syncer.clone();
        let handle = std::thread::Builder::new()
            .name("stream-sync".into())
            .spawn(move || me.run())
            .ok();
        if handle.is_none() {
            tracing::error!("cannot start the stream sync thread");
        }
        *syncer.thread.lock() = handle;
        syncer
    }

    pub(crate) fn schedule(&self, stream: Arc<Stream>) {
        let mut q = self.queue.lock();
        if q.stop {
            // Stopped: flush on the caller's thread so nothing waits forever.
            drop(q);
            flush(&stream, self.sync);
            return;
        }
        q.streams.push(stream);
        self.work.notify_one();
    }

    /// Calls `done` once every stream's records appended before this call are durable.
    pub fn barrier(&self, done: Box<dyn FnOnce() + Send>) {
        let mut q = self.queue.lock();
        if q.stop {
            drop(q);
            done();
            return;
        }
        q.barriers.push(done);
        self.work.notify_one();
    }

    /// Writes what is pending and stops the thread. Idempotent.
    pub fn stop(&self) {
        self.queue.lock().stop = true;
        self.work.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    fn run(&self) {
        loop {
            let (streams, barriers) = {
                let mut q = self.queue.lock();
                while q.streams.is_empty() && q.barriers.is_empty() && !q.stop {
                    self.work.wait(&mut q);
                }
                if q.streams.is_empty() && q.barriers.is_empty() && q.stop {
                    return;
                }
                (
                    std::mem::take(&mut q.streams),
                    std::mem::take(&mut q.barriers),
                )
            };
            for s in streams {
                flush(&s, self.sync);
            }
            // A stream flushed by an earlier pass that is still queued was taken above.
            for done in barriers {
                done();
            }
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.queue.get_mut().stop = true;
        self.work.notify_all();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes one stream's pending chunks, fsyncs, then commits and calls back.
fn flush(stream: &Arc<Stream>, sync: bool) {
    let mut writer = stream.writer.lock();
    let (chunks, callbacks, upto) = {
        let mut st = stream.state.lock();
        st.queued = false;
        if st.closed || st.failed.is_some() {
            st.pending.clear();
            st.durable_callbacks.clear();
            return;
        }
        (
            std::mem::take(&mut st.pending),
            std::mem::take(&mut st.durable_callbacks),
            st.next_offset,
        )
    };
    let result = write(stream, &mut writer, &chunks, sync);
    drop(writer);
    let listeners = {
        let mut st = stream.state.lock();
        if let Err(e) = &result {
            tracing::error!(stream = %stream.dir().display(), error = %e, "stream write/fsync failed; the stream accepts no more appends");
            st.failed = Some(e.to_string());
            return;
        }
        st.committed = st.committed.max(upto);
        let committed = st.committed;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.listeners)
            .into_iter()
            .partition(|(o, _)| *o < committed);
        st.listeners = waiting;
        ready
    };
    if !chunks.is_empty() {
        stream.enforce_retention(now_ms());
    }
    for cb in callbacks {
        cb();
    }
    for (_, wake) in listeners {
        wake();
    }
}

fn write(
    stream: &Stream,
    writer: &mut Option<(u64, std::fs::File)>,
    chunks: &[crate::Chunk],
    sync: bool,
) -> Result<(), StreamError> {
    let mut created = false;
    let mut touched: Vec<std::fs::File> = Vec::new();
    for c in chunks {
        if writer.as_ref().is_none_or(|(b, _)| *b != c.base) {
            if let Some((_, old)) = writer.take() {
                touched.push(old);
            }
            let path = stream.dir().join(file_name(c.base));
            created |= !path.exists();
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            *writer = Some((c.base, f));
        }
        if let Some((base, f)) = writer.as_ref() {
            let path = stream.dir().join(file_name(*base));
            f.write_all_at(&c.data, c.pos).map_err(io_err(&path))?;
        }
    }
    if sync {
        for f in touched.iter().chain(writer.as_ref().map(|(_, f)| f)) {
            f.sync_data().map_err(io_err(stream.dir()))?;
        }
        if created {
            std::fs::File::open(stream.dir())
                .and_then(|d| d.sync_all())
                .map_err(io_err(stream.dir()))?;
        }
    }
    Ok(())
}
