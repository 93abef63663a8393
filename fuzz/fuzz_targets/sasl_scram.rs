#![no_main]
//! A SCRAM server exchange fed an arbitrary client-first and client-final message (first octet
//! picks hash, -PLUS, offered channel bindings and known/unknown user): no panics, errors end
//! the exchange, fake credentials never verify.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_sasl::fuzzing::scram_target(data));
