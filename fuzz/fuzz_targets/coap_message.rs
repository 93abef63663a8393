#![no_main]
//! CoAP decode and the endpoint machine over arbitrary datagrams: no panics,
//! decode(encode(m)) == m.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_coap::fuzzing::message_target(data));
