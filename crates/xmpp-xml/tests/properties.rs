//! Property tests: arbitrary input never panics or stalls and does not
//! depend on chunking; arbitrary trees survive serialization.

use proptest::collection::vec;
use proptest::prelude::*;

use tributary_xmpp_xml::fuzzing::{assert_round_trip, drive, stream_target};
use tributary_xmpp_xml::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

/// Pieces of XMPP and of hostile XML, so that random sequences get past the
/// first byte often enough to reach the interesting states.
const FRAGMENTS: &[&str] = &[
    HEADER,
    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
    "<message to='a@b' xml:lang='en'>",
    "</message>",
    "<body>",
    "</body>",
    "<presence/>",
    "<a xmlns='urn:a'>",
    "</a>",
    "<p:x xmlns:p='urn:p' p:y='1'/>",
    "<b c='d' e=\"f\"/>",
    "text",
    " ",
    "\r\n",
    "\t",
    "ü€😀",
    "&amp;",
    "&#x41;",
    "&custom;",
    "<![CDATA[<x> & ]]>",
    "]]>",
    "<!--",
    "-->",
    "<?pi?>",
    "<?xml version='1.0'?>",
    "<!DOCTYPE x>",
    "</stream:stream>",
    "<stream:features/>",
    "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    "<",
    ">",
    "/>",
    "'",
    "=",
    "\u{0}",
    "\u{FFFE}",
];

fn xmlish() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            4 => proptest::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            1 => vec(any::<u8>(), 1..4),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9._-]{0,5}".prop_filter("not xmlns", |n| n != "xmlns")
}

fn namespace() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("jabber:client".to_string()),
        Just("urn:a".to_string()),
        Just("urn:b?q='1'&r=\"<2>\"".to_string()),
        Just(STREAM_NS.to_string()),
    ]
}

fn attr_ns() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(XML_NS.to_string())),
        1 => Just(Some("urn:a".to_string())),
        1 => Just(Some("urn:attr'\"".to_string())),
    ]
}

fn text() -> impl Strategy<Value = String> {
    "[a-z &<>'\"\\]\r\n\t\u{e9}\u{20ac}\u{1F600}]{0,12}"
}

fn element() -> impl Strategy<Value = Element> {
    let leaf = (name(), namespace(), vec((attr_ns(), name(), text()), 0..5)).prop_map(
        |(name, ns, attrs)| {
            let mut e = Element::new(name, ns);
            for (ns, name, value) in attrs {
                if !e.attrs.iter().any(|a| a.ns == ns && a.name == name) {
                    e.attrs.push(Attribute { ns, name, value });
                }
            }
            e
        },
    );
    leaf.prop_recursive(5, 48, 6, |inner| {
        (
            inner.clone(),
            vec(
                prop_oneof![inner.prop_map(Node::Element), text().prop_map(Node::Text)],
                0..6,
            ),
        )
            .prop_map(|(mut e, children)| {
                e.children = children;
                e
            })
    })
}

/// What parsing gives back for a tree: no empty text nodes, adjacent text
/// merged.
fn normalize(e: &Element) -> Element {
    let mut out = Element {
        children: Vec::new(),
        ..e.clone()
    };
    for child in &e.children {
        match child {
            Node::Text(t) if t.is_empty() => {}
            Node::Text(t) => match out.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(t),
                _ => out.children.push(Node::Text(t.clone())),
            },
            Node::Element(c) => out.children.push(Node::Element(normalize(c))),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes: no panic, every call consumes or completes an event
    /// or fails (so a feed loop terminates), and the outcome does not depend
    /// on the chunking (`drive` asserts the contract on every call).
    #[test]
    fn arbitrary_bytes_never_stall(data in vec(any::<u8>(), 0..1024), chunk in 1usize..40) {
        let whole = drive(Limits::default(), &data, data.len().max(1));
        prop_assert_eq!(drive(Limits::default(), &data, chunk), whole);
        let _ = StreamParser::framed(Limits::default()).feed_message(&data);
    }

    /// XML-shaped input with a header in front, through the fuzz harness
    /// (chunk equivalence, byte by byte, round trip of every element), in
    /// both modes and with tight limits.
    #[test]
    fn xmlish_input_through_the_harness(octet in any::<u8>(), body in xmlish(), header in any::<bool>()) {
        let mut input = vec![octet];
        if header {
            input.extend_from_slice(HEADER.as_bytes());
        }
        input.extend_from_slice(&body);
        stream_target(&input);
    }

    /// A plain feed loop over arbitrary input terminates.
    #[test]
    fn feed_loop_terminates(data in xmlish()) {
        let mut p = StreamParser::new(Limits::default());
        let mut rest = &data[..];
        let mut calls = 0;
        while let Ok((n, event)) = p.feed(rest) {
            calls += 1;
            prop_assert!(calls <= data.len() + 2, "feed loop spins");
            rest = &rest[n..];
            if event.is_none() {
                prop_assert!(rest.is_empty());
                break;
            }
        }
    }

    /// Random trees: write_to + parse gives the same tree, standalone and
    /// inside a stream relative to its default namespace, in any chunking.
    #[test]
    fn trees_round_trip(e in element(), chunk in 1usize..16) {
        let e = normalize(&e);
        assert_round_trip(&e);

        let mut input = HEADER.as_bytes().to_vec();
        e.write_to(&mut input, "jabber:client");
        input.extend_from_slice(b" </stream:stream>");
        let (events, err) = drive(Limits::default(), &input, chunk);
        prop_assert_eq!(err, None);
        prop_assert_eq!(events.len(), 3);
        prop_assert_eq!(&events[1], &StreamEvent::Element(e));
    }
}
