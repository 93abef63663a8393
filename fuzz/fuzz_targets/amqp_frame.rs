#![no_main]
//! decode_frame over arbitrary input (first octet picks frame_max).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_amqp::fuzzing::frame_target(data));
