//! kill -9 test: a child process (this test binary re-executed) publishes with `on_durable`
//! callbacks that print the confirmed ids; the parent SIGKILLs it mid-stream, reopens the store
//! and checks that every confirmed id is there exactly once and in order. Several rounds on the
//! same directory, each child also acking some recovered messages.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_store::{Store, StoreOptions};

const ENV: &str = "TRIBUTARY_STORE_CRASH_CHILD";
const THREADS: u64 = 3;
const SHARED_QUEUE: u64 = 100;

fn payload(id: u64) -> Vec<u8> {
    let n = (id % 700) as usize + 10;
    (0..n)
        .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect()
}

fn options() -> StoreOptions {
    StoreOptions {
        segment_size: 256 << 10,
        sync: true,
        load_payloads: true,
    }
}

/// The child: runs only when re-executed by `crash_recovery_keeps_every_confirmed_message`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(ENV) else { return };
    let (store, rec) = Store::open(dir.as_ref(), options()).expect("child open");
    // libtest printed "test crash_child ... " without a newline: start our lines on a fresh one.
    println!();
    // Ack a quarter of what came back; announce it first (the ack may or may not survive).
    for (q, msgs) in &rec.queues {
        for m in msgs.iter().filter(|m| m.msg_id % 4 == 0) {
            // Written to the real stdout (println! may be captured by the test harness).
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "A {q} {}", m.msg_id);
            let _ = out.flush();
            store.append_ack(*q, m.msg_id);
        }
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                while started.elapsed() < Duration::from_secs(30) {
                    let id = store.next_msg_id();
                    let queues: &[u64] = if id % 5 == 0 {
                        &[t + 1, SHARED_QUEUE]
                    } else {
                        &[t + 1]
                    };
                    store.append_publish(id, queues, &payload(id));
                    let q = queues.to_vec();
                    store.on_durable(Box::new(move |_| {
                        let mut out = std::io::stdout().lock();
                        for q in q {
                            let _ = writeln!(out, "C {q} {id}");
                        }
                        let _ = out.flush();
                    }));
                    if id % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(3); // the parent should have killed us long ago
}

#[test]
fn crash_recovery_keeps_every_confirmed_message() {
    if std::env::var(ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // (queue, id) confirmed and never acked: must be present.
    let mut must: HashSet<(u64, u64)> = HashSet::new();
    let mut acked: HashSet<(u64, u64)> = HashSet::new();
    let mut total_confirmed = 0usize;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = 300 + round as usize * 700;
        let mut confirmed_now = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut killed = false;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            let (Some(kind), Some(q), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(q), Ok(id)) = (q.parse::<u64>(), id.parse::<u64>()) else {
                continue;
            };
            match kind {
                "C" => {
                    assert!(must.insert((q, id)), "confirmed twice: {q} {id}");
                    confirmed_now += 1;
                }
                "A" => {
                    acked.insert((q, id));
                    must.remove(&(q, id));
                }
                _ => {}
            }
            if !killed && (confirmed_now >= kill_after || Instant::now() > deadline) {
                child.kill().unwrap(); // SIGKILL
                killed = true;
                // Keep reading: lines printed before the kill are still in the pipe.
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "child ended on its own: {status:?}");
        assert!(confirmed_now >= kill_after);
        total_confirmed += confirmed_now;

        let (store, rec) = Store::open(dir.path(), options()).unwrap();
        assert!(!rec.clean_shutdown);
        let mut present: HashMap<u64, BTreeSet<u64>> = HashMap::new();
        for (q, msgs) in &rec.queues {
            let set = present.entry(*q).or_default();
            for m in msgs {
                assert!(set.insert(m.msg_id), "duplicate {q} {}", m.msg_id);
                assert_eq!(m.payload.as_ref(), payload(m.msg_id).as_slice());
                assert!(m.delivered);
            }
            if *q != SHARED_QUEUE {
                // One publisher thread per queue: ids must come back in publish order.
                let ids: Vec<u64> = msgs.iter().map(|m| m.msg_id).collect();
                assert!(
                    ids.windows(2).all(|w| w[0] < w[1]),
                    "queue {q} out of order"
                );
            }
        }
        for (q, id) in &must {
            assert!(
                present.get(q).is_some_and(|s| s.contains(id)),
                "round {round}: confirmed ({q}, {id}) lost (acked: {}, first of queue: {:?}); report {:?}",
                acked.contains(&(*q, *id)),
                present.get(q).and_then(|s| s.iter().next()),
                rec.report
            );
        }
        println!(
            "round {round}: {confirmed_now} confirmed, recovered {} live, report truncated {:?} corrupt {}",
            rec.queues.values().map(Vec::len).sum::<usize>(),
            rec.report.truncated,
            rec.report.corrupt.len()
        );
        assert!(rec.report.corrupt.is_empty());
        drop(rec);
        drop(Arc::try_unwrap(store).ok());
    }
    assert!(total_confirmed > 0);
    assert!(!acked.is_empty());
}
