//! Replays every committed fuzz input (fuzz/corpus/stream_segment and
//! fuzz/regressions/stream_segment) through the cargo-fuzz target's harness, on stable Rust.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use tributary_stream::{NewRecord, Stream, StreamOptions, Syncer};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(rd) = fs::read_dir(fuzz_dir().join(kind).join(target)) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_stream_segment() {
    let files = files("stream_segment");
    assert!(!files.is_empty(), "no stream_segment corpus");
    for f in files {
        tributary_stream::fuzzing::segment_target(&fs::read(&f).unwrap());
    }
}

/// A real segment: three records, one with a filter value.
fn segment_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let syncer = Syncer::start(false);
    let (s, _) = Stream::open(dir.path(), StreamOptions::default(), &syncer).unwrap();
    let recs = [
        NewRecord {
            timestamp_ms: 1_700_000_000_000,
            filter: None,
            payload: b"first",
        },
        NewRecord {
            timestamp_ms: 1_700_000_000_001,
            filter: Some(b"eu"),
            payload: b"second",
        },
        NewRecord {
            timestamp_ms: 1_700_000_000_002,
            filter: None,
            payload: b"",
        },
    ];
    s.append(&recs).unwrap();
    durable(&s);
    syncer.stop();
    let seg = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    fs::read(seg).unwrap()
}

fn durable(s: &Arc<Stream>) {
    let (tx, rx) = mpsc::channel();
    s.on_durable(Box::new(move || tx.send(()).unwrap()));
    rx.recv().unwrap();
}

/// Regenerates the seed corpus: `cargo test -p tributary-stream --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let whole = segment_bytes();
    let mut torn = whole.clone();
    torn.truncate(whole.len() - 3);
    let mut flipped = whole.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let mut huge_len = whole.clone();
    huge_len[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let dir = fuzz_dir().join("corpus/stream_segment");
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("three-records", whole),
        ("torn-tail", torn),
        ("flipped-byte", flipped),
        ("huge-length", huge_len),
        ("empty", Vec::new()),
    ] {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
