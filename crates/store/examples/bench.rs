//! Quick measurement: `cargo run --release -p tributary-store --example bench [-- DIR]`.
//!
//! 1. confirmed appends/s at 1 KiB with `on_durable`, 1 and 10 threads, two publisher styles:
//!    "sync" waits for each confirm before the next publish; "window" keeps 256 unconfirmed.
//! 2. recovery time for 1,000,000 x 1 KiB live messages.
//!
//! DIR defaults to a temporary directory (put it on the disk you want to measure).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tributary_store::{Store, StoreOptions};

const BODY: usize = 1024;
const RUN: Duration = Duration::from_secs(3);

fn confirmed_rate(dir: &std::path::Path, threads: usize, window: usize) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir);
    let (store, _) = Store::open(dir, StoreOptions::default()).expect("open");
    let confirmed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let confirmed = confirmed.clone();
            std::thread::spawn(move || {
                let body = vec![t as u8; BODY];
                while start.elapsed() < RUN {
                    let (tx, rx) = mpsc::sync_channel(1);
                    for i in 0..window {
                        let id = store.next_msg_id();
                        store.append_publish(id, &[t as u64], &body);
                        let confirmed = confirmed.clone();
                        let tx = (i + 1 == window).then(|| tx.clone());
                        store.on_durable(Box::new(move |_| {
                            confirmed.fetch_add(1, Ordering::Relaxed);
                            if let Some(tx) = tx {
                                let _ = tx.send(());
                            }
                        }));
                    }
                    rx.recv().expect("confirm");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = store.stats();
    store.close().expect("close");
    let n = confirmed.load(Ordering::Relaxed) as f64;
    (n / secs, n / stats.fsyncs.max(1) as f64)
}

fn main() {
    let base: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tributary-store-bench"));
    std::fs::create_dir_all(&base).expect("mkdir");
    println!(
        "store bench in {} (1 KiB bodies, fdatasync on)",
        base.display()
    );
    let rates = std::env::var_os("BENCH_SKIP_RATES").is_none();
    for (style, window) in [("sync  ", 1), ("window", 256)]
        .into_iter()
        .filter(|_| rates)
    {
        for threads in [1, 10] {
            let (rate, per_fsync) = confirmed_rate(&base.join("rate"), threads, window);
            println!(
                "  {style} {threads:>2} thread(s): {rate:>10.0} confirmed appends/s  ({per_fsync:.1} per fsync)"
            );
        }
    }

    let n: u64 = std::env::var("BENCH_RECOVERY_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = base.join("recovery");
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (store, _) = Store::open(&dir, StoreOptions::default()).expect("open");
        let body = vec![7u8; BODY];
        let t = Instant::now();
        for i in 0..n {
            let id = store.next_msg_id();
            store.append_publish(id, &[i % 10], &body);
        }
        store.close().expect("close");
        println!(
            "  wrote {n} x 1 KiB in {:.2}s ({} segments)",
            t.elapsed().as_secs_f64(),
            std::fs::read_dir(dir.join("log"))
                .map(|d| d.count())
                .unwrap_or(0)
        );
    }
    let t = Instant::now();
    let (store, rec) = Store::open(&dir, StoreOptions::default()).expect("reopen");
    let live: usize = rec.queues.values().map(Vec::len).sum();
    println!(
        "  recovery of {live} live messages: {:.2}s wall (report: {:.2}s, {} records)",
        t.elapsed().as_secs_f64(),
        rec.report.duration.as_secs_f64(),
        rec.report.records
    );
    drop(rec);
    // Ack everything, then reopen: recovery of a fully acked log.
    for q in 0..10u64 {
        for id in 1..=n {
            store.append_ack(q, id);
        }
    }
    store.sync().expect("sync");
    std::thread::sleep(Duration::from_millis(200));
    let stats = store.stats();
    store.close().expect("close");
    drop(store);
    println!(
        "  after acking all: {} segments left, {} deleted",
        stats.segments, stats.segments_deleted
    );
    let _ = std::fs::remove_dir_all(&base);
}
