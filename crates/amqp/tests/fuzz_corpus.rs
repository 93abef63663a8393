//! Replays every committed fuzz input (fuzz/corpus/* and fuzz/regressions/*) through the same
//! harnesses as the cargo-fuzz targets, on stable Rust.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tributary_amqp::fuzzing::{connection_target, frame_target};
use tributary_amqp::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn replay_amqp_frame() {
    let files = files("amqp_frame");
    assert!(!files.is_empty(), "no amqp_frame corpus");
    for f in files {
        frame_target(&fs::read(&f).unwrap());
    }
}

#[test]
fn replay_amqp_connection() {
    let files = files("amqp_connection");
    assert!(!files.is_empty(), "no amqp_connection corpus");
    for f in files {
        connection_target(&fs::read(&f).unwrap());
    }
}

fn seed_frames() -> Vec<(&'static str, BytesMut)> {
    let mut seeds = Vec::new();
    let mut b = BytesMut::new();
    let publish = Method::BasicPublish {
        ticket: 0,
        exchange: "amq.direct".into(),
        routing_key: "rk".into(),
        mandatory: true,
        immediate: false,
    };
    encode_method(1, &publish, &mut b);
    let props = BasicProperties {
        content_type: Some("text/plain".into()),
        delivery_mode: Some(2),
        headers: Some(FieldTable(vec![("x".into(), FieldValue::I32(1))])),
        ..Default::default()
    };
    encode_header(1, 60, 10, &props, &mut b);
    encode_body(1, b"0123456789", 4096, &mut b);
    seeds.push(("publish_one_body", b.clone()));

    let mut b = BytesMut::new();
    encode_method(1, &publish, &mut b);
    encode_header(1, 60, 5000, &BasicProperties::default(), &mut b);
    encode_body(1, &[7u8; 5000], 4096, &mut b);
    seeds.push(("publish_two_bodies", b));

    let mut b = BytesMut::new();
    let declare = Method::QueueDeclare {
        ticket: 0,
        queue: "q".into(),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable(vec![("x-message-ttl".into(), FieldValue::I32(1000))]),
    };
    encode_method(1, &declare, &mut b);
    encode_method(
        1,
        &Method::BasicQos {
            prefetch_size: 0,
            prefetch_count: 10,
            global: false,
        },
        &mut b,
    );
    encode_method(1, &Method::ChannelCloseOk, &mut b);
    encode_method(
        2,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
        &mut b,
    );
    encode_method(2, &Method::ConfirmSelect { nowait: false }, &mut b);
    encode_method(
        2,
        &Method::ChannelClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
        &mut b,
    );
    encode_heartbeat(&mut b);
    seeds.push(("methods", b));

    let mut b = BytesMut::new();
    encode_method(
        0,
        &Method::ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
        &mut b,
    );
    seeds.push(("connection_close", b));
    seeds
}

/// Regenerates the seed corpus: `cargo test -p tributary-amqp --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    for (name, frames) in seed_frames() {
        let mut f = vec![0x20u8];
        f.extend_from_slice(&frames);
        fs::write(fuzz_dir().join("corpus/amqp_frame").join(name), &f).unwrap();
        let mut c = vec![0x12u8, 0x34];
        c.extend_from_slice(&frames);
        fs::write(fuzz_dir().join("corpus/amqp_connection").join(name), &c).unwrap();
    }
    let mut f = vec![0x00u8];
    f.extend_from_slice(&fuzzing::handshake_prefix()[8..]);
    fs::write(fuzz_dir().join("corpus/amqp_frame/handshake"), &f).unwrap();
    let _ = Bytes::new();
}
