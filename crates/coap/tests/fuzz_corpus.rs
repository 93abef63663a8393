//! Replays every committed fuzz input (fuzz/corpus/coap_message and
//! fuzz/regressions/coap_message) through the cargo-fuzz target's harness, on stable Rust.

use bytes::Bytes;
use std::fs;
use std::path::{Path, PathBuf};
use tributary_coap::message::to_bytes;
use tributary_coap::{Code, Message, Type, block::Block, option};

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
fn replay_coap_message() {
    let files = files("coap_message");
    assert!(!files.is_empty(), "no coap_message corpus");
    for f in files {
        tributary_coap::fuzzing::message_target(&fs::read(&f).unwrap());
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut put = Message::new(Type::Con, Code::PUT, 0x1001);
    put.token = Bytes::from_static(b"\x01\x02");
    put.add_option(option::URI_PATH, Bytes::from_static(b"ps"));
    put.add_option(option::URI_PATH, Bytes::from_static(b"sensors"));
    put.add_option(option::URI_PATH, Bytes::from_static(b"t1"));
    put.add_uint_option(option::CONTENT_FORMAT, 50);
    put.add_option(option::URI_QUERY, Bytes::from_static(b"u=guest"));
    put.add_option(option::URI_QUERY, Bytes::from_static(b"p=guest"));
    put.payload = Bytes::from_static(b"{\"t\":21.5}");
    let mut observe = Message::new(Type::Con, Code::GET, 0x1002);
    observe.token = Bytes::from_static(b"obs");
    observe.add_uint_option(option::OBSERVE, 0);
    observe.add_option(option::URI_PATH, Bytes::from_static(b"ps"));
    observe.add_option(option::URI_PATH, Bytes::from_static(b"#"));
    let mut block1 = Message::new(Type::Con, Code::PUT, 0x1003);
    block1.add_option(option::URI_PATH, Bytes::from_static(b"ps"));
    block1.add_option(
        option::BLOCK1,
        Block {
            num: 0,
            more: true,
            szx: 2,
        }
        .encode(),
    );
    block1.add_uint_option(option::SIZE1, 200);
    block1.payload = Bytes::from(vec![b'x'; 64]);
    let ack = Message::new(Type::Ack, Code::EMPTY, 0x1004);
    let mut joined = to_bytes(&put).to_vec();
    joined.push(0xfe);
    joined.extend_from_slice(&to_bytes(&ack));
    vec![
        ("put", to_bytes(&put).to_vec()),
        ("observe", to_bytes(&observe).to_vec()),
        ("block1", to_bytes(&block1).to_vec()),
        ("two_datagrams", joined),
        ("ping", vec![0x40, 0, 0x12, 0x34]),
    ]
}

/// Regenerates the seed corpus: `cargo test -p tributary-coap --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/coap_message");
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
