//! Replays every committed `xmpp_c2s` fuzz input (fuzz/corpus and
//! fuzz/regressions) through the same harness as the cargo-fuzz target, on
//! stable Rust, and checks arbitrary input with proptest.

use proptest::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};
use tributary_xmpp::fuzzing::c2s_target;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(rd) = fs::read_dir(fuzz_dir().join(kind).join("xmpp_c2s")) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_xmpp_c2s() {
    let files = files();
    assert!(!files.is_empty(), "no xmpp_c2s corpus");
    for f in files {
        c2s_target(&fs::read(&f).expect("corpus file"));
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Seeds: a full login with PLAIN, bind, SM and a message; STARTTLS; a
/// WebSocket session; malformed input.
fn seeds() -> Vec<(&'static str, u8, String)> {
    let auth = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>";
    let bound = "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>";
    vec![
        (
            "login_bind_sm_message",
            8,
            format!(
                "{HEADER}{auth}{HEADER}{bound}<enable xmlns='urn:xmpp:sm:3' resume='true'/>\
                 <message to='bob@localhost'><body>hi</body></message><r xmlns='urn:xmpp:sm:3'/>\
                 <a xmlns='urn:xmpp:sm:3' h='1'/></stream:stream>"
            ),
        ),
        (
            "starttls",
            1 | 2,
            format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>{HEADER}{auth}"),
        ),
        (
            "websocket",
            8 | 16,
            format!(
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>\0{auth}\0\
                 <open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>\0\
                 {}\0<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
                bound.replace("<iq ", "<iq xmlns='jabber:client' ")
            ),
        ),
        (
            "doctype",
            8,
            "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY lol 'lol'>]><lol>&lol;</lol>".into(),
        ),
        (
            "register_and_resume",
            8 | 32,
            format!(
                "{HEADER}<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>x</username>\
                 <password>y</password></query></iq>{auth}{HEADER}<resume xmlns='urn:xmpp:sm:3' previd='p' h='0'/>"
            ),
        ),
    ]
}

#[test]
fn seeds_pass_the_harness() {
    for (_, octet, text) in seeds() {
        let mut input = vec![octet];
        input.extend_from_slice(text.as_bytes());
        c2s_target(&input);
    }
}

/// Regenerates the seed corpus: `cargo test -p tributary-xmpp --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/xmpp_c2s");
    fs::create_dir_all(&dir).expect("corpus dir");
    for (name, octet, text) in seeds() {
        let mut input = vec![octet];
        input.extend_from_slice(text.as_bytes());
        fs::write(dir.join(name), input).expect("write seed");
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        c2s_target(&data);
    }

    #[test]
    fn mutated_logins_never_panic(cut in 0usize..400, byte in any::<u8>(), octet in any::<u8>()) {
        let (_, _, text) = &seeds()[0];
        let mut bytes = text.clone().into_bytes();
        if cut < bytes.len() {
            bytes[cut] = byte;
        }
        let mut input = vec![octet];
        input.extend_from_slice(&bytes);
        c2s_target(&input);
    }
}
