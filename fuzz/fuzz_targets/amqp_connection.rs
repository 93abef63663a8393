#![no_main]
//! A Connection after a valid handshake, fed arbitrary bytes at arbitrary split points.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_amqp::fuzzing::connection_target(data));
