#![no_main]
//! Kafka request decode over an arbitrary byte stream (size-prefixed frames, headers, bodies
//! at every supported version, Produce record batches with decompression): no panics, every
//! malformed input an error value.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tributary_kafka::fuzzing::request_target(data);
});
