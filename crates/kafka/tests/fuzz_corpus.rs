//! Replays every committed fuzz input (fuzz/corpus/kafka_request and
//! fuzz/regressions/kafka_request) through the same harness as the cargo-fuzz target, on
//! stable Rust; and writes the seed corpus (`-- --ignored write_seed_corpus`).

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use tributary_kafka::compression::Compression;
use tributary_kafka::fuzzing::request_target;
use tributary_kafka::records::{Record, encode_batch};
use tributary_kafka::wire::{
    put_array_len, put_bytes, put_empty_tags, put_nullable_bytes, put_string,
};
use tributary_kafka::{Request, RequestHeader, api};

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
fn replay_kafka_request() {
    let files = files("kafka_request");
    assert!(!files.is_empty(), "no kafka_request corpus");
    for f in files {
        request_target(&fs::read(&f).unwrap());
    }
}

#[test]
fn seeds_decode_to_the_requests_they_encode() {
    for (name, bytes, kind) in seeds() {
        let reqs = request_target(&bytes);
        assert_eq!(reqs.len(), 1, "{name}");
        assert_eq!(
            std::mem::discriminant(&reqs[0]),
            std::mem::discriminant(&kind),
            "{name}"
        );
    }
}

fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    RequestHeader {
        api_key,
        api_version: version,
        correlation_id: 1,
        client_id: Some("seed".into()),
    }
    .encode(&mut b);
    b.put_slice(body);
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&b);
    out
}

fn seeds() -> Vec<(&'static str, Vec<u8>, Request)> {
    let mut v = Vec::new();
    let mut b = BytesMut::new();
    put_string(&mut b, "librdkafka", true);
    put_string(&mut b, "2.6.0", true);
    put_empty_tags(&mut b);
    v.push((
        "api_versions_v3",
        frame(api::API_VERSIONS, 3, &b),
        Request::ApiVersions,
    ));
    let mut b = BytesMut::new();
    put_array_len(&mut b, Some(1), false);
    put_string(&mut b, "topic", false);
    b.put_u8(1);
    b.put_u8(0);
    b.put_u8(0);
    v.push((
        "metadata_v8",
        frame(api::METADATA, 8, &b),
        Request::Metadata(Default::default()),
    ));
    for (name, codec) in [
        ("produce_none", Compression::None),
        ("produce_gzip", Compression::Gzip),
        ("produce_snappy", Compression::Snappy),
        ("produce_lz4", Compression::Lz4),
        ("produce_zstd", Compression::Zstd),
    ] {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                offset: i,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from_static(b"key")),
                value: Some(Bytes::from(vec![b'v'; 64])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
            })
            .collect();
        let mut batch = BytesMut::new();
        encode_batch(&mut batch, &records, codec);
        let mut b = BytesMut::new();
        b.put_i16(-1); // transactional id
        b.put_i16(1);
        b.put_i32(30_000);
        put_array_len(&mut b, Some(1), false);
        put_string(&mut b, "topic", false);
        put_array_len(&mut b, Some(1), false);
        b.put_i32(0);
        put_nullable_bytes(&mut b, Some(&batch), false);
        v.push((
            name,
            frame(api::PRODUCE, 8, &b),
            Request::Produce(Default::default()),
        ));
    }
    let mut b = BytesMut::new();
    b.put_i32(-1);
    b.put_i32(500);
    b.put_i32(1);
    b.put_i32(52_428_800);
    b.put_i8(0);
    b.put_i32(0);
    b.put_i32(-1);
    put_array_len(&mut b, Some(1), false);
    put_string(&mut b, "topic", false);
    put_array_len(&mut b, Some(1), false);
    b.put_i32(0);
    b.put_i32(-1);
    b.put_i64(0);
    b.put_i64(-1);
    b.put_i32(1 << 20);
    put_array_len(&mut b, Some(0), false);
    put_string(&mut b, "", false);
    v.push((
        "fetch_v11",
        frame(api::FETCH, 11, &b),
        Request::Fetch(Default::default()),
    ));
    let mut b = BytesMut::new();
    put_string(&mut b, "group", false);
    b.put_i32(10_000);
    b.put_i32(300_000);
    put_string(&mut b, "", false);
    b.put_i16(-1);
    put_string(&mut b, "consumer", false);
    put_array_len(&mut b, Some(1), false);
    put_string(&mut b, "range", false);
    put_bytes(
        &mut b,
        b"\x00\x00\x00\x00\x00\x01\x00\x05topic\x00\x00\x00\x00",
        false,
    );
    v.push((
        "join_group_v5",
        frame(api::JOIN_GROUP, 5, &b),
        Request::JoinGroup(Default::default()),
    ));
    let mut b = BytesMut::new();
    put_bytes(&mut b, b"\x00user\x00pass", false);
    v.push((
        "sasl_authenticate_v1",
        frame(api::SASL_AUTHENTICATE, 1, &b),
        Request::SaslAuthenticate(Bytes::new()),
    ));
    v.push((
        "unsupported_version",
        frame(api::API_VERSIONS, 99, b"junk"),
        Request::Unsupported,
    ));
    v
}

/// Regenerates the seed corpus.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/kafka_request");
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes, _) in seeds() {
        fs::write(dir.join(name), &bytes).unwrap();
    }
}
