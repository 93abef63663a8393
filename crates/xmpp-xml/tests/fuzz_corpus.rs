//! Replays every committed fuzz input (fuzz/corpus/xml_stream and
//! fuzz/regressions/xml_stream) through the same harness as the cargo-fuzz
//! target, on stable Rust.

use std::fs;
use std::path::{Path, PathBuf};

use tributary_xmpp_xml::fuzzing::{config, drive, stream_target};
use tributary_xmpp_xml::*;

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
fn replay_xml_stream() {
    let files = files("xml_stream");
    assert!(!files.is_empty(), "no xml_stream corpus");
    for f in files {
        stream_target(&fs::read(&f).unwrap());
    }
}

#[test]
fn seeds_pass_the_harness() {
    for (name, octet, bytes, expected) in seeds() {
        let mut input = vec![octet];
        input.extend_from_slice(&bytes);
        stream_target(&input);
        let (framed, limits, chunk) = config(octet);
        if framed {
            let mut p = StreamParser::framed(limits);
            let results: Vec<_> = bytes
                .split(|&b| b == 0)
                .map(|m| p.feed_message(m))
                .collect();
            assert!(results.iter().all(Result::is_ok), "{name}: {results:?}");
            continue;
        }
        let (events, error) = drive(limits, &bytes, chunk);
        assert_eq!(error.as_ref().map(XmlError::condition), expected, "{name}");
        assert!(!events.is_empty() || expected.is_some(), "{name}");
    }
}

const C2S_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' \
    from='juliet@example.com' version='1.0' xml:lang='en'>";

/// A client's side of a session after SASL (one document: the parser sees
/// each restart as a new one).
const C2S: &str = "\n<iq type='set' id='bind_1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>\
    <presence><show>away</show><status xml:lang='en'>Wherefore art thou?</status><priority>5</priority></presence> \
    <iq type='get' id='roster_1'><query xmlns='jabber:iq:roster'/></iq>\
    <message to='romeo@example.net/orchard' type='chat' id='m1' xml:lang='en'>\
    <body>Art thou not Romeo, and a Montague?</body><body xml:lang='cs'>Nejsi Romeo, &amp; Montek?</body>\
    <thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>\
    <active xmlns='http://jabber.org/protocol/chatstates'/>\
    <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p style='font-weight:bold'>Art thou &lt;b&gt;not&lt;/b&gt;?</p></body></html>\
    </message>\t\r\n \
    <r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='3'/>\
    <iq type='set' id='up'><data xmlns='urn:xmpp:bob'><![CDATA[iVBORw0KGgo=]]></data></iq>\
    </stream:stream>";

/// A server's answers: features, SASL, errors, all at stream level.
const S2C: &str = "<?xml version='1.0'?><stream:stream from='example.com' id='++TR84Sm6A3hnt3Q065SnAbbk3Y=' \
    to='juliet@example.com' version='1.0' xml:lang='en' xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams'>\
    <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
    <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
    <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
    <challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1vTXNUQUF3QUFBQU1BQUFBTlAwVEFBQUFBQUJQVTBBQSxzPTEyMzQsaT00MDk2</challenge>\
    <success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
    <stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>oops</text></stream:error>\
    </stream:stream>";

const S2S: &str = "<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
    xmlns:stream='http://etherx.jabber.org/streams' from='example.net' to='example.com' version='1.0'>\
    <db:result from='example.net' to='example.com'>b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3</db:result>\
    <message from='romeo@example.net' to='juliet@example.com' xmlns:x='urn:x' x:attr='1'><body>hi</body></message>";

const WEBSOCKET: &[&str] = &[
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
    "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>",
    "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
    "<message xmlns='jabber:client' to='romeo@example.net'><body>hi &amp; bye</body></message>\n",
    "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
];

/// (name, config octet, stream, expected error condition).
fn seeds() -> Vec<(&'static str, u8, Vec<u8>, Option<&'static str>)> {
    let c2s = format!("{C2S_HEADER}{C2S}").into_bytes();
    const SHORT_HEADER: &str =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let tight = format!(
        "{SHORT_HEADER}<presence/> <message to='a@b'><body>short</body></message></stream:stream>"
    )
    .into_bytes();
    let hostile = |s: &str| format!("{C2S_HEADER}{s}").into_bytes();
    vec![
        ("c2s_session", 4 * 63, c2s.clone(), None),
        ("c2s_session_bytewise", 0, c2s, None),
        ("s2c_session", 4 * 5, S2C.as_bytes().to_vec(), None),
        ("s2s_session", 4 * 2, S2S.as_bytes().to_vec(), None),
        ("tight_limits", 2 | (4 * 3), tight, None),
        ("websocket", 1, WEBSOCKET.join("\0").into_bytes(), None),
        (
            "dtd",
            0,
            b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>]><stream:stream>&lol;"
                .to_vec(),
            Some("restricted-xml"),
        ),
        ("comment", 0, hostile("<!-- hi -->"), Some("restricted-xml")),
        (
            "processing_instruction",
            4,
            hostile("<message><?php x?></message>"),
            Some("restricted-xml"),
        ),
        (
            "undeclared_entity",
            0,
            hostile("<message>&custom;</message>"),
            Some("not-well-formed"),
        ),
        (
            "deep_nesting",
            0,
            hostile(&"<a>".repeat(200)),
            Some("policy-violation"),
        ),
        (
            "oversize",
            2 | (4 * 8),
            format!(
                "{SHORT_HEADER}<message><body>{}</body></message>",
                "x".repeat(400)
            )
            .into_bytes(),
            Some("policy-violation"),
        ),
        (
            "stream_text",
            0,
            hostile("hello<presence/>"),
            Some("bad-format"),
        ),
        (
            "wrong_root",
            0,
            b"<stream xmlns='jabber:client'>".to_vec(),
            Some("invalid-namespace"),
        ),
    ]
}

/// Regenerates the seed corpus:
/// `cargo test -p tributary-xmpp-xml --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/xml_stream");
    fs::create_dir_all(&dir).unwrap();
    for (name, octet, bytes, _) in seeds() {
        let mut f = vec![octet];
        f.extend_from_slice(&bytes);
        fs::write(dir.join(name), &f).unwrap();
    }
}
