//! Replays every committed fuzz input (fuzz/corpus/sasl_scram and fuzz/regressions/sasl_scram)
//! through the same harness as the cargo-fuzz target, on stable Rust.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Client;
use tributary_sasl::fuzzing::{self, scram_target};
use tributary_sasl::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(rd) = fs::read_dir(fuzz_dir().join(kind).join(target)) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_sasl_scram() {
    let files = files("sasl_scram");
    assert!(!files.is_empty(), "no sasl_scram corpus");
    for f in files {
        scram_target(&fs::read(&f).unwrap());
    }
}

/// (name, input, whether the exchange succeeds).
fn seeds() -> Vec<(&'static str, Vec<u8>, bool)> {
    let input = |octet: u8, first: &str, last: Option<&str>| {
        let mut v = vec![octet];
        v.extend_from_slice(first.as_bytes());
        if let Some(last) = last {
            v.push(0);
            v.extend_from_slice(last.as_bytes());
        }
        v
    };
    let rfc5802 = (
        "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    );
    let rfc7677 = (
        "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    );
    // SCRAM-SHA-256-PLUS with tls-exporter, both bindings offered (octet 0b1111).
    let plus = Client::new(ScramHash::Sha256, "user", fuzzing::PASSWORD)
        .plus("tls-exporter", &fuzzing::TLS_EXPORTER_DATA);
    let plus_first = format!("{}{}", plus.gs2_header, plus.bare());
    let plus_server_first = format!(
        "r={}{},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        plus.client_nonce,
        fuzzing::server_nonce(ScramHash::Sha256)
    );
    let plus_final = plus.finish(plus_server_first.as_bytes()).message;
    vec![
        ("rfc5802_sha1", input(0, rfc5802.0, Some(rfc5802.1)), true),
        ("rfc7677_sha256", input(1, rfc7677.0, Some(rfc7677.1)), true),
        (
            "sha256_plus_tls_exporter",
            input(0x0f, &plus_first, Some(&plus_final)),
            true,
        ),
        (
            "unknown_user",
            input(0x11, rfc7677.0, Some(rfc7677.1)),
            false,
        ),
        (
            "downgrade_y",
            input(0x05, "y,,n=user,r=abc", Some("c=eSws,r=abc,p=AA==")),
            false,
        ),
        (
            "authzid_escapes",
            input(0, "n,a=ad=2Cm=3Din,n=us=2Cer,r=abc,x=ext", None),
            false,
        ),
    ]
}

#[test]
fn seeds_pass_the_harness() {
    for (name, input, succeeds) in seeds() {
        scram_target(&input);
        let (hash, plus, bindings, unknown) = fuzzing::config(input[0]);
        let rest = &input[1..];
        let (first, last) = match rest.iter().position(|&b| b == 0) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let mut server =
            ScramServer::with_nonce(hash, plus, bindings, fuzzing::server_nonce(hash).into());
        let result = server.client_first(first).and_then(|c| {
            let creds = if unknown {
                ScramCredentials::fake(hash, &c.username, b"x")
            } else {
                fuzzing::credentials(hash)
            };
            server.server_first(creds);
            server.client_final(last.unwrap_or_default())
        });
        assert_eq!(result.is_ok(), succeeds, "{name}: {result:?}");
    }
}

/// Regenerates the seed corpus: `cargo test -p tributary-sasl --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/sasl_scram");
    fs::create_dir_all(&dir).unwrap();
    for (name, input, _) in seeds() {
        fs::write(dir.join(name), input).unwrap();
    }
}
