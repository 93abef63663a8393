//! The stream log: appends, readers, the index, retention and recovery.

use std::sync::Arc;
use std::sync::mpsc;

use proptest::prelude::*;
use tributary_stream::{NewRecord, Start, Stream, StreamOptions, Syncer};

fn opts(segment: u64) -> StreamOptions {
    StreamOptions {
        max_segment_bytes: segment,
        index_interval_bytes: 256,
        ..StreamOptions::default()
    }
}

fn append(s: &Arc<Stream>, n: usize, ts0: i64) -> u64 {
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("record-{i:05}").into_bytes())
        .collect();
    let recs: Vec<NewRecord<'_>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| NewRecord {
            timestamp_ms: ts0 + i as i64,
            filter: (i % 2 == 0).then_some(&b"even"[..]),
            payload: b,
        })
        .collect();
    let first = s.append(&recs).unwrap();
    durable(s);
    first
}

fn durable(s: &Arc<Stream>) {
    let (tx, rx) = mpsc::channel();
    s.on_durable(Box::new(move || tx.send(()).unwrap()));
    rx.recv().unwrap();
}

fn read_all(s: &Arc<Stream>, start: Start) -> Vec<(u64, Vec<u8>)> {
    let mut r = s.reader(start);
    let mut out = Vec::new();
    loop {
        let batch = r.read(7, 1 << 20).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|r| (r.offset, r.payload.to_vec())));
    }
}

#[test]
fn appends_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(false);
    let (s, _) = Stream::open(dir.path(), opts(1000), &syncer).unwrap();
    assert_eq!(append(&s, 200, 1_000), 0);
    let info = s.info();
    assert_eq!(
        (info.first_offset, info.committed, info.records),
        (0, 200, 200)
    );
    assert!(info.segments > 5, "{info:?}");
    let all = read_all(&s, Start::First);
    assert_eq!(all.len(), 200);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (o, b))| *o == i as u64 && *b == format!("record-{i:05}").into_bytes())
    );
    assert_eq!(read_all(&s, Start::Offset(150))[0].0, 150);
    assert_eq!(
        read_all(&s, Start::Last),
        vec![(199, b"record-00199".to_vec())]
    );
    assert!(read_all(&s, Start::Next).is_empty());
    // Timestamps are 1000 + offset.
    assert_eq!(read_all(&s, Start::Timestamp(1_123))[0].0, 123);
    assert!(read_all(&s, Start::Timestamp(99_999)).is_empty());
    let first = s.reader(Start::First).read(1, 1).unwrap();
    assert_eq!(first[0].filter.as_deref(), Some(&b"even"[..]));
    syncer.stop();
}

#[test]
fn next_reader_waits_for_new_records() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(false);
    let (s, _) = Stream::open(dir.path(), opts(1 << 20), &syncer).unwrap();
    append(&s, 3, 0);
    let mut r = s.reader(Start::Next);
    assert!(r.read(10, 1 << 20).unwrap().is_empty());
    let (tx, rx) = mpsc::channel();
    s.on_commit(r.next_offset(), Box::new(move || tx.send(()).unwrap()));
    append(&s, 2, 0);
    rx.recv().unwrap();
    let got: Vec<u64> = r
        .read(10, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(got, vec![3, 4]);
    syncer.stop();
}

#[test]
fn retention_by_size_and_age_deletes_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(false);
    let mut o = opts(1000);
    o.max_bytes = Some(3000);
    let (s, _) = Stream::open(dir.path(), o, &syncer).unwrap();
    let mut r = s.reader(Start::First);
    append(&s, 300, 0);
    let info = s.info();
    assert!(info.bytes <= 4000 && info.first_offset > 0, "{info:?}");
    assert_eq!(info.next_offset, 300);
    // A reader left behind continues at the oldest retained record.
    let mut got = Vec::new();
    loop {
        let b = r.read(100, 1 << 20).unwrap();
        if b.is_empty() {
            break;
        }
        got.extend(b.into_iter().map(|x| x.offset));
    }
    assert_eq!(*got.last().unwrap(), 299);
    assert!(got.windows(2).all(|w| w[0] < w[1]));

    let mut o = opts(1000);
    o.max_age_ms = Some(1000);
    s.set_options(o);
    // Every record has a timestamp near 0: everything but the head segment is too old.
    assert!(s.enforce_retention(10_000) > 0);
    assert_eq!(s.info().segments, 1);
    syncer.stop();
}

#[test]
fn reopen_keeps_records_and_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(true);
    {
        let (s, _) = Stream::open(dir.path(), opts(2000), &syncer).unwrap();
        append(&s, 100, 5);
    }
    // A crash in the middle of a write: half a record at the end of the last segment.
    let mut segs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    let mut bytes = std::fs::read(last).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 100, 0]);
    std::fs::write(last, &bytes).unwrap();

    let (s, report) = Stream::open(dir.path(), opts(2000), &syncer).unwrap();
    assert_eq!(report.records, 100);
    assert_eq!(report.truncated_bytes, 10);
    assert_eq!(std::fs::metadata(last).unwrap().len(), len);
    assert_eq!(s.info().next_offset, 100);
    assert_eq!(append(&s, 5, 0), 100);
    let all = read_all(&s, Start::First);
    assert_eq!(all.len(), 105);
    assert_eq!(all[104].0, 104);
    assert_eq!(read_all(&s, Start::Timestamp(50))[0].0, 45);
    syncer.stop();
}

#[test]
fn a_corrupt_record_in_the_last_segment_cuts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(false);
    {
        let (s, _) = Stream::open(dir.path(), opts(1 << 20), &syncer).unwrap();
        append(&s, 10, 0);
    }
    let path = dir.path().join(format!("{:020}.seg", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (s, report) = Stream::open(dir.path(), opts(1 << 20), &syncer).unwrap();
    assert_eq!(report.records, 9);
    assert_eq!(s.info().next_offset, 9);
    syncer.stop();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_layout_reads_back_from_any_offset(
        sizes in proptest::collection::vec(0usize..700, 1..120),
        segment in 64u64..4000,
        interval in 1u64..2000,
        from in 0u64..130,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let syncer = Syncer::start(false);
        let o = StreamOptions { max_segment_bytes: segment, index_interval_bytes: interval, ..StreamOptions::default() };
        let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| vec![i as u8; *n]).collect();
        {
            let (s, _) = Stream::open(dir.path(), o.clone(), &syncer).unwrap();
            for chunk in bodies.chunks(7) {
                let recs: Vec<_> = chunk.iter().enumerate().map(|(i, b)| NewRecord { timestamp_ms: i as i64, filter: None, payload: b }).collect();
                s.append(&recs).unwrap();
            }
            durable(&s);
        }
        let (s, report) = Stream::open(dir.path(), o, &syncer).unwrap();
        prop_assert_eq!(report.records, bodies.len() as u64);
        let got = read_all(&s, Start::Offset(from));
        let want: Vec<(u64, Vec<u8>)> = bodies.iter().enumerate().skip(from as usize).map(|(i, b)| (i as u64, b.clone())).collect();
        prop_assert_eq!(got, want);
        syncer.stop();
    }
}
