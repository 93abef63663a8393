#![no_main]
//! The configuration parser over arbitrary text: every input is either a
//! `Config` or an error naming what is wrong, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tributary::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
    }
});
