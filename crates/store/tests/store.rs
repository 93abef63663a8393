use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tributary_store::{Location, Store, StoreError, StoreOptions};

fn opts(segment_size: u64) -> StoreOptions {
    StoreOptions {
        segment_size,
        sync: true,
        load_payloads: true,
    }
}

fn body(id: u64) -> Vec<u8> {
    let n = (id as usize * 37) % 300 + 1;
    (0..n).map(|i| (id as usize + i) as u8).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn ids(rec: &tributary_store::Recovery, q: u64) -> Vec<u64> {
    rec.queues
        .get(&q)
        .map(|v| v.iter().map(|m| m.msg_id).collect())
        .unwrap_or_default()
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
    let last;
    {
        let (store, rec) = Store::open(dir.path(), opts(8 << 10)).unwrap();
        assert!(rec.queues.is_empty());
        assert!(!rec.clean_shutdown);
        let mut id = 0;
        for i in 0..300u64 {
            id = store.next_msg_id();
            let queues: Vec<u64> = [1u64, 2, 3]
                .into_iter()
                .filter(|q| (i + q) % 2 == 0 || *q == 3)
                .collect();
            let loc = store.append_publish(id, &queues, &body(id));
            assert_eq!(loc.len as usize, body(id).len());
            for q in queues {
                expected.entry(q).or_default().push((id, false));
            }
        }
        last = id;
        // Ack every third message of each queue, mark every fifth delivered.
        for (q, msgs) in expected.iter_mut() {
            msgs.retain(|(m, _)| {
                if m % 3 == 0 {
                    store.append_ack(*q, *m);
                    false
                } else {
                    true
                }
            });
            for (m, d) in msgs.iter_mut() {
                if *m % 5 == 0 {
                    store.append_delivered(*q, *m);
                    *d = true;
                }
            }
        }
        store.sync().unwrap();
        let live: u64 = {
            let mut s = std::collections::HashSet::new();
            for v in expected.values() {
                s.extend(v.iter().map(|x| x.0));
            }
            s.len() as u64
        };
        assert_eq!(store.stats().live_messages, live);
        store.close().unwrap();
    }
    let (store, rec) = Store::open(dir.path(), opts(8 << 10)).unwrap();
    assert!(rec.clean_shutdown);
    assert!(rec.report.truncated.is_empty() && rec.report.corrupt.is_empty());
    assert_eq!(rec.queues.len(), expected.len());
    for (q, msgs) in &expected {
        let got = &rec.queues[q];
        let got_pairs: Vec<(u64, bool)> = got.iter().map(|m| (m.msg_id, m.delivered)).collect();
        assert_eq!(&got_pairs, msgs, "queue {q}");
        for m in got {
            assert_eq!(m.payload.as_ref(), body(m.msg_id).as_slice());
            assert_eq!(store.read(m.location).unwrap(), m.payload);
        }
    }
    assert!(store.next_msg_id() > last);
    drop(store);
    // Not closed this time: everything comes back flagged delivered.
    let (_store, rec) = Store::open(dir.path(), opts(8 << 10)).unwrap();
    assert!(!rec.clean_shutdown);
    for (q, msgs) in &expected {
        assert_eq!(ids(&rec, *q), msgs.iter().map(|x| x.0).collect::<Vec<_>>());
        assert!(rec.queues[q].iter().all(|m| m.delivered));
    }
}

#[test]
fn group_commit_batches_and_fires_each_callback_once_after_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), opts(64 << 20)).unwrap();
    const THREADS: u64 = 8;
    const PER: u64 = 400;
    let fired: Arc<Vec<AtomicU64>> =
        Arc::new((0..THREADS * PER + 1).map(|_| AtomicU64::new(0)).collect());
    let bad = Arc::new(AtomicU64::new(0));
    let log_dir = dir.path().join("log");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let fired = fired.clone();
            let bad = bad.clone();
            let log_dir = log_dir.clone();
            std::thread::spawn(move || {
                for _ in 0..PER {
                    let id = store.next_msg_id();
                    let loc = store.append_publish(id, &[t], &[t as u8; 100]);
                    let fired = fired.clone();
                    let bad = bad.clone();
                    let path = log_dir.join(format!("{:020}.seg", loc.segment));
                    let s = store.clone();
                    store.on_durable(Box::new(move |proof| {
                        fired[id as usize].fetch_add(1, Ordering::SeqCst);
                        // The record is in the file and at least one fsync completed.
                        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                        if len < loc.offset + loc.len as u64
                            || s.stats().fsyncs == 0
                            || proof.batch() == 0
                        {
                            bad.fetch_add(1, Ordering::SeqCst);
                        }
                    }));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.sync().unwrap();
    for (id, f) in fired.iter().enumerate().skip(1) {
        assert_eq!(f.load(Ordering::SeqCst), 1, "callback of {id}");
    }
    assert_eq!(bad.load(Ordering::SeqCst), 0);
    let stats = store.stats();
    println!(
        "appends {} fsyncs {} batches {}",
        stats.appends, stats.fsyncs, stats.batches
    );
    assert_eq!(stats.appends, THREADS * PER);
    assert!(stats.fsyncs < stats.appends / 2, "{stats:?}");
    store.close().unwrap();
}

#[test]
fn paging_read_before_and_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), opts(4096)).unwrap();
    let mut locs = Vec::new();
    for i in 0..50u64 {
        let id = store.next_msg_id();
        // Some payloads are larger than a segment.
        let payload = if i % 10 == 0 {
            vec![i as u8; 10_000]
        } else {
            body(id)
        };
        let loc = store.append_publish(id, &[1], &payload);
        assert_eq!(
            store.read(loc).unwrap().as_ref(),
            payload.as_slice(),
            "before sync"
        );
        locs.push((loc, payload));
    }
    store.sync().unwrap();
    for (loc, payload) in &locs {
        assert_eq!(
            store.read(*loc).unwrap().as_ref(),
            payload.as_slice(),
            "after sync"
        );
    }
    let bogus = Location {
        segment: 9999,
        offset: 0,
        len: 4,
    };
    assert!(matches!(store.read(bogus), Err(StoreError::NotFound(_))));
    store.close().unwrap();
    let (store, rec) = Store::open(dir.path(), opts(4096)).unwrap();
    let got: Vec<_> = rec.queues[&1].iter().map(|m| m.location).collect();
    assert_eq!(got, locs.iter().map(|x| x.0).collect::<Vec<_>>());
    for (loc, payload) in &locs {
        assert_eq!(
            store.read(*loc).unwrap().as_ref(),
            payload.as_slice(),
            "after reopen"
        );
    }
}

fn fill(dir: &Path, n: u64, segment_size: u64) -> Vec<Location> {
    let (store, _) = Store::open(dir, opts(segment_size)).unwrap();
    let mut locs = Vec::new();
    for _ in 0..n {
        let id = store.next_msg_id();
        locs.push(store.append_publish(id, &[1], &body(id)));
    }
    store.close().unwrap();
    locs
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let locs = fill(dir.path(), 20, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Cut the last record in half.
    let last = locs.last().unwrap();
    let cut = last.offset + last.len as u64 / 2;
    assert!(cut < len);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let (store, rec) = Store::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(rec.report.truncated.len(), 1, "{:?}", rec.report);
    assert!(rec.report.corrupt.is_empty());
    assert_eq!(ids(&rec, 1), (1..20).collect::<Vec<_>>());
    for m in &rec.queues[&1] {
        assert_eq!(m.payload.as_ref(), body(m.msg_id).as_slice());
    }
    // The new run appends to a fresh segment; the next open is clean of damage.
    let id = store.next_msg_id();
    assert_eq!(id, 20, "an id whose record was lost may be reused");
    store.append_publish(id, &[1], b"again");
    store.close().unwrap();
    let (_store, rec) = Store::open(dir.path(), opts(1 << 20)).unwrap();
    assert!(rec.report.truncated.is_empty() && rec.report.corrupt.is_empty());
    assert_eq!(ids(&rec, 1), (1..=20).collect::<Vec<_>>());
}

#[test]
fn garbage_and_zero_tails_are_truncated() {
    for tail in [
        vec![0u8; 4096],
        vec![0xAB; 3],
        b"\x10\x00\x00\x00garbage!garbage!".to_vec(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), 5, 1 << 20);
        let seg = segments(dir.path()).pop().unwrap();
        let mut data = fs::read(&seg).unwrap();
        let good = data.len() as u64;
        data.extend_from_slice(&tail);
        fs::write(&seg, &data).unwrap();
        let (_store, rec) = Store::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(rec.report.truncated.len(), 1);
        assert_eq!(rec.report.truncated[0].offset, good);
        assert_eq!(ids(&rec, 1), (1..=5).collect::<Vec<_>>());
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    }
}

#[test]
fn bit_flip_in_the_middle_skips_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let locs = fill(dir.path(), 30, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let mut data = fs::read(&seg).unwrap();
    let victim = locs[14]; // msg 15
    data[victim.offset as usize + 3] ^= 0x10;
    fs::write(&seg, &data).unwrap();
    let (_store, rec) = Store::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(rec.report.corrupt.len(), 1, "{:?}", rec.report);
    assert!(rec.report.truncated.is_empty());
    let want: Vec<u64> = (1..=30).filter(|&i| i != 15).collect();
    assert_eq!(ids(&rec, 1), want);
}

#[test]
fn implausible_length_in_an_older_segment_ends_only_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let locs = fill(dir.path(), 60, 2048);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    // Find the first record header of segment 1 after the checkpoint and break its length.
    let first_seg_msgs: Vec<u64> = locs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.segment == 1)
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let mut data = fs::read(&segs[0]).unwrap();
    let second = locs[1];
    assert_eq!(second.segment, 1);
    // The publish header for msg 2 starts 8 (len+crc) + 1 + 8 + 4 + 8 bytes before its body.
    let rec_start = second.offset as usize - (8 + 1 + 8 + 4 + 8);
    data[rec_start..rec_start + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&segs[0], &data).unwrap();
    let (_store, rec) = Store::open(dir.path(), opts(2048)).unwrap();
    assert_eq!(rec.report.scan_stopped.len(), 1, "{:?}", rec.report);
    assert!(rec.report.truncated.is_empty());
    // Message 1 survives, the rest of segment 1 is unread, later segments are fine.
    let got = ids(&rec, 1);
    let want: Vec<u64> = (1..=60)
        .filter(|i| *i == 1 || !first_seg_msgs.contains(i))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn reclaim_deletes_dead_segments_and_compacts_a_mostly_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let seg_size = 4096;
    let (store, _) = Store::open(dir.path(), opts(seg_size)).unwrap();
    let mut keep = Vec::new();
    let mut keep_locs = Vec::new();
    for i in 0..2000u64 {
        let id = store.next_msg_id();
        let loc = store.append_publish(id, &[1, 2], &[i as u8; 100]);
        // Keep one message in 50 alive in queue 2 only.
        store.append_ack(1, id);
        if i % 50 == 7 {
            keep.push(id);
            keep_locs.push((loc, [i as u8; 100]));
        } else {
            store.append_ack(2, id);
        }
    }
    store.sync().unwrap();
    let ok = wait_until(|| {
        store.sync().unwrap();
        let s = store.stats();
        s.segments_compacted > 0 && s.segments_deleted > 10 && s.segments < 10
    });
    let stats = store.stats();
    println!("{stats:?}");
    assert!(ok, "{stats:?}");
    assert!(stats.records_moved > 0);
    assert_eq!(stats.live_messages, keep.len() as u64);
    // Old locations still read after the records moved.
    for (loc, payload) in &keep_locs {
        assert_eq!(store.read(*loc).unwrap().as_ref(), payload.as_slice());
    }
    store.close().unwrap();
    let files = segments(dir.path()).len() as u64;
    assert!(files <= 12, "{files} files");
    let (store, rec) = Store::open(dir.path(), opts(seg_size)).unwrap();
    assert!(!rec.queues.contains_key(&1));
    assert_eq!(ids(&rec, 2), keep);
    for (m, (_, payload)) in rec.queues[&2].iter().zip(&keep_locs) {
        assert_eq!(m.payload.as_ref(), payload.as_slice());
        assert!(!m.delivered);
    }
    // Ack the rest: everything but the head goes away.
    for id in &keep {
        store.append_ack(2, *id);
    }
    assert!(wait_until(|| {
        store.sync().unwrap();
        store.stats().segments <= 2
    }));
    store.close().unwrap();
    let (_s, rec) = Store::open(dir.path(), opts(seg_size)).unwrap();
    assert!(rec.queues.is_empty());
}

#[test]
fn queue_deleted_removes_only_older_messages() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), opts(1 << 20)).unwrap();
        store.append_publish(1, &[1, 2], b"a");
        store.append_publish(2, &[1], b"b");
        store.append_queue_deleted(1);
        store.append_publish(3, &[1], b"c"); // queue 1 re-created with the same id
        assert_eq!(store.stats().live_messages, 2);
        store.close().unwrap();
    }
    let (_store, rec) = Store::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(ids(&rec, 1), vec![3]);
    assert_eq!(ids(&rec, 2), vec![1]);
}

#[test]
fn meta_tables_persist() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
        assert!(store.meta_list("queues").unwrap().is_empty());
        store.meta_put("queues", "/:q1", b"{durable}").unwrap();
        store.meta_put("queues", "/:q2", b"x").unwrap();
        store.meta_put("users", "guest", b"hash").unwrap();
        store.meta_delete("queues", "/:q2").unwrap();
        store.meta_delete("queues", "absent").unwrap();
        store.close().unwrap();
    }
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(
        store.meta_list("queues").unwrap(),
        vec![("/:q1".to_string(), b"{durable}".to_vec())]
    );
    assert_eq!(store.meta_list("users").unwrap().len(), 1);
}

#[test]
fn meta_apply_is_one_ordered_transaction() {
    use tributary_store::MetaOp;
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.meta_apply(&[]).unwrap();
        store
            .meta_apply(&[
                MetaOp::Put {
                    table: "a",
                    key: "k1",
                    value: b"1",
                },
                MetaOp::Put {
                    table: "b",
                    key: "k2",
                    value: b"2",
                },
                MetaOp::Delete {
                    table: "a",
                    key: "k1",
                },
                MetaOp::Put {
                    table: "a",
                    key: "k1",
                    value: b"again",
                },
                MetaOp::Delete {
                    table: "c",
                    key: "absent",
                },
            ])
            .unwrap();
        store.close().unwrap();
    }
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(
        store.meta_list("a").unwrap(),
        vec![("k1".to_string(), b"again".to_vec())]
    );
    assert_eq!(
        store.meta_list("b").unwrap(),
        vec![("k2".to_string(), b"2".to_vec())]
    );
}

#[test]
fn second_open_is_refused_and_format_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StoreError::Locked)
    ));
    store.close().unwrap();
    drop(store);
    assert_eq!(
        fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        "tributary-store 1\n"
    );
    fs::write(dir.path().join("FORMAT"), "tributary-store 99\n").unwrap();
    assert!(matches!(
        Store::open(dir.path(), StoreOptions::default()),
        Err(StoreError::Format { .. })
    ));
}

#[test]
fn after_close_appends_are_dropped_and_sync_is_ok() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.append_publish(1, &[1], b"kept");
    store.close().unwrap();
    store.append_publish(2, &[1], b"dropped");
    store.sync().unwrap();
    store.close().unwrap();
    drop(store);
    let (_s, rec) = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(ids(&rec, 1), vec![1]);
    let _: HashMap<u64, Vec<_>> = rec.queues;
}

#[test]
fn recovery_without_payloads_reads_them_back_by_location() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = Store::open(dir.path(), opts(4 << 10)).unwrap();
        for id in 1..=50u64 {
            store.append_publish(id, &[7], &body(id));
        }
        store.close().unwrap();
    }
    let lazy = StoreOptions {
        load_payloads: false,
        ..opts(4 << 10)
    };
    let (store, rec) = Store::open(dir.path(), lazy).unwrap();
    let msgs = &rec.queues[&7];
    assert_eq!(msgs.len(), 50);
    for m in msgs {
        assert!(
            m.payload.is_empty(),
            "payload loaded although load_payloads is false"
        );
        assert_eq!(
            store.read(m.location).unwrap().as_ref(),
            body(m.msg_id).as_slice()
        );
    }
}
