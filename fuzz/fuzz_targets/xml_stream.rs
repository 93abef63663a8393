#![no_main]
//! XMPP XML stream parsing over arbitrary input (first octet picks TCP or WebSocket mode, tight
//! or default limits, and a chunk size): no panics, no stalls, the same events whatever the split
//! points, and every parsed element serializes and parses back to itself.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_xmpp_xml::fuzzing::stream_target(data));
