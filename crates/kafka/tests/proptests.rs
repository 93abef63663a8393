//! Property tests: record batches round-trip with any records and codec; request decoding
//! never panics on arbitrary bytes, and a truncated valid request is an error, not a panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tributary_kafka::compression::Compression;
use tributary_kafka::records::{Record, decode_batches, encode_batch};
use tributary_kafka::{decode_frame, decode_request};

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        0i64..1000,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        proptest::collection::vec(
            (
                "[a-z]{1,8}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            ),
            0..4,
        ),
    )
        .prop_map(|(ts, key, value, headers)| Record {
            offset: 0,
            timestamp: 1_700_000_000_000 + ts,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k, v.map(Bytes::from)))
                .collect(),
        })
}

proptest! {
    #[test]
    fn batches_round_trip(mut records in proptest::collection::vec(record(), 1..20), c in codec(), base in 0i64..1_000_000) {
        for (i, r) in records.iter_mut().enumerate() {
            r.offset = base + i as i64;
        }
        let mut b = BytesMut::new();
        encode_batch(&mut b, &records, c);
        let batches = decode_batches(b.freeze(), 1 << 20).unwrap();
        prop_assert_eq!(batches.len(), 1);
        prop_assert_eq!(&batches[0].records, &records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_batches(Bytes::from(data.clone()), 1 << 16);
        let _ = decode_request(Bytes::from(data.clone()));
        let mut buf = BytesMut::from(&data[..]);
        let _ = decode_frame(&mut buf, 1 << 16);
    }

    #[test]
    fn truncated_batches_are_errors(records in proptest::collection::vec(record(), 1..5), cut in 1usize..100) {
        let mut b = BytesMut::new();
        encode_batch(&mut b, &records, Compression::None);
        prop_assume!(cut < b.len());
        let n = b.len() - cut;
        prop_assert!(decode_batches(b.freeze().slice(..n), 1 << 20).is_err());
    }
}
