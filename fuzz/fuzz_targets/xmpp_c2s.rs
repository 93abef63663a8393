#![no_main]
//! An XMPP client stream driven by arbitrary bytes (first octet picks TLS policy, framing and
//! chunk size), with the server's answers simulated: no panics, no stalls, nothing written after
//! the stream closed.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_xmpp::fuzzing::c2s_target(data));
