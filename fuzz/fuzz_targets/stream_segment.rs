#![no_main]
//! A stream segment file found on disk at start-up, as arbitrary bytes: recovery and reading
//! never panic and return only whole, checksummed records in offset order.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tributary_stream::fuzzing::segment_target(data));
