//! The `stream_segment` fuzz target's harness, public so that the committed corpus can be
//! replayed by an ordinary test on stable Rust (`tests/fuzz_corpus.rs`).

use crate::record::{Decoded, decode};
use crate::{Start, Stream, StreamOptions, Syncer};
use std::sync::Arc;

/// Treats `data` as the bytes of a segment file found on disk at start-up: decoding it record
/// by record must never panic or loop, and opening a stream on it (recovery truncates at the
/// first damaged or torn record) and reading everything back must return exactly the
/// checksummed records that come before the damage, in offset order.
pub fn segment_target(data: &[u8]) {
    let mut at = 0;
    let mut whole = 0usize;
    while at < data.len() {
        match decode(&data[at..]) {
            Decoded::Record { size, .. } => {
                assert!(size > 0, "a record has a size");
                at += size;
                whole += 1;
            }
            Decoded::Partial { need } => {
                assert!(
                    need > data.len() - at,
                    "partial means more bytes are needed"
                );
                break;
            }
            Decoded::Damaged(_) => break,
        }
    }
    let dir = std::env::temp_dir().join(format!("tributary-stream-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err()
        || std::fs::write(dir.join(crate::segment::file_name(0)), data).is_err()
    {
        return;
    }
    let syncer = Syncer::start(false);
    if let Ok((stream, _report)) = Stream::open(&dir, StreamOptions::default(), &syncer) {
        read_all(&stream, whole);
    }
    syncer.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads the stream from its first record; at most `whole` records can come back.
fn read_all(stream: &Arc<Stream>, whole: usize) {
    let mut reader = stream.reader(Start::First);
    let mut seen = 0usize;
    let mut last: Option<u64> = None;
    // Bounded: each round returns at least one record or ends the loop.
    for _ in 0..=whole {
        let Ok(batch) = reader.read(64, 1 << 20) else {
            return;
        };
        if batch.is_empty() {
            break;
        }
        for r in batch {
            assert!(last.is_none_or(|l| r.offset > l), "offsets increase");
            last = Some(r.offset);
            seen += 1;
        }
    }
    assert!(seen <= whole, "read {seen} records from {whole} whole ones");
}
