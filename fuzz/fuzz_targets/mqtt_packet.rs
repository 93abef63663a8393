#![no_main]
//! MQTT decode over arbitrary input (first octet picks the version and packet size limit):
//! no panics, decode(encode(p)) == p, and the same packets whatever the split points.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_mqtt::fuzzing::packet_target(data));
