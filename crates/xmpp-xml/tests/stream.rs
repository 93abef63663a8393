//! The stream parser and the serializer against hand-written XMPP streams,
//! hostile input and the limits.

use std::time::{Duration, Instant};

use tributary_xmpp_xml::fuzzing::{assert_round_trip, drive};
use tributary_xmpp_xml::*;

const HEADER: &str = "<?xml version='1.0'?>\
    <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
    to='example.com' from='juliet@example.com' version='1.0' xml:lang='en'>";

const STANZAS: &str = "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>\n \
    <message to='romeo@example.net' type='chat' xml:lang='en'><body>Art thou not Romeo, &amp; a Montague?</body>\
    <x xmlns='urn:example:x' a='1'><![CDATA[<raw> & ]]>text</x></message>\
    \t<presence/>\r\n<iq type='get' id='q1'><query xmlns='jabber:iq:roster'/></iq>";

/// Feeds everything in one chunk, collecting events until the input is gone.
fn events_of(input: &[u8]) -> (Vec<StreamEvent>, Option<XmlError>) {
    drive(Limits::default(), input, input.len().max(1))
}

fn parse_one(xml: &str) -> Result<Element, XmlError> {
    let mut p = StreamParser::new(Limits::default());
    let input = format!("{HEADER}{xml}");
    let mut rest = input.as_bytes();
    loop {
        let (n, ev) = p.feed(rest)?;
        rest = &rest[n..];
        match ev {
            Some(StreamEvent::Element(e)) => return Ok(e),
            Some(_) => continue,
            None => panic!("no element in {xml}"),
        }
    }
}

fn err_of(input: &str) -> XmlError {
    let (_, err) = events_of(input.as_bytes());
    err.unwrap_or_else(|| panic!("no error for {input}"))
}

fn tight(max_stanza_bytes: usize, max_depth: usize, max_attributes: usize) -> Limits {
    Limits {
        max_stanza_bytes,
        max_depth,
        max_attributes,
    }
}

#[test]
fn header_and_stanzas() {
    let input = format!("{HEADER}{STANZAS}</stream:stream>");
    let (events, err) = events_of(input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.len(), 6, "{events:#?}");

    let StreamEvent::Open { header, default_ns } = &events[0] else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(default_ns, "jabber:client");
    assert!(header.is("stream", STREAM_NS));
    assert!(header.children.is_empty());
    assert_eq!(header.attr("to"), Some("example.com"));
    assert_eq!(header.attr("from"), Some("juliet@example.com"));
    assert_eq!(header.attr("version"), Some("1.0"));
    assert_eq!(header.attr_ns(XML_NS, "lang"), Some("en"));
    // Namespace declarations are not attributes.
    assert_eq!(header.attrs.len(), 4, "{:?}", header.attrs);

    let StreamEvent::Element(features) = &events[1] else {
        panic!()
    };
    assert!(features.is("features", STREAM_NS));
    let starttls = features
        .child("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .expect("starttls");
    assert!(
        starttls
            .child("required", "urn:ietf:params:xml:ns:xmpp-tls")
            .is_some()
    );

    let StreamEvent::Element(message) = &events[2] else {
        panic!()
    };
    assert!(message.is("message", "jabber:client"));
    assert_eq!(message.attr_ns(XML_NS, "lang"), Some("en"));
    assert_eq!(
        message.child("body", "jabber:client").map(|b| b.text()),
        Some("Art thou not Romeo, & a Montague?".to_string())
    );
    let x = message.child("x", "urn:example:x").expect("x");
    assert_eq!(x.attr("a"), Some("1"));
    // CDATA and plain text merge into one text node.
    assert_eq!(x.children, vec![Node::Text("<raw> & text".into())]);

    assert_eq!(
        events[3],
        StreamEvent::Element(Element::new("presence", "jabber:client"))
    );
    let StreamEvent::Element(iq) = &events[4] else {
        panic!()
    };
    assert!(iq.child("query", "jabber:iq:roster").is_some());
    assert_eq!(events[5], StreamEvent::Close);
}

#[test]
fn one_chunk_and_byte_by_byte_agree() {
    let input = format!("{HEADER}{STANZAS}</stream:stream>");
    let whole = events_of(input.as_bytes());
    assert_eq!(whole.0.len(), 6);
    for chunk in [1, 2, 3, 7, 64] {
        assert_eq!(
            drive(Limits::default(), input.as_bytes(), chunk),
            whole,
            "chunk {chunk}"
        );
    }
}

#[test]
fn pipelined_bytes_are_left_unconsumed() {
    let starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    let injected = "<iq type='set' id='evil'><query xmlns='jabber:iq:roster'/></iq>";
    let input = format!("{HEADER}{starttls}{injected}");
    let mut p = StreamParser::new(Limits::default());

    let (n, ev) = p.feed(input.as_bytes()).unwrap();
    assert_eq!(n, HEADER.len());
    assert!(matches!(ev, Some(StreamEvent::Open { .. })));

    let rest = &input.as_bytes()[n..];
    let (n, ev) = p.feed(rest).unwrap();
    assert_eq!(n, starttls.len(), "stops right after <starttls/>");
    assert_eq!(
        ev,
        Some(StreamEvent::Element(Element::new(
            "starttls",
            "urn:ietf:params:xml:ns:xmpp-tls"
        )))
    );
    assert_eq!(&rest[n..], injected.as_bytes());

    // Same with an end tag rather than a self-closing one, and whitespace
    // keepalives before it.
    let mut p = StreamParser::new(Limits::default());
    let success = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dmVy</success>";
    let input = format!("{HEADER}  \n{success}<stream:stream");
    let (n, _) = p.feed(input.as_bytes()).unwrap();
    let rest = &input.as_bytes()[n..];
    let (n, ev) = p.feed(rest).unwrap();
    assert!(matches!(ev, Some(StreamEvent::Element(ref e)) if e.text() == "dmVy"));
    assert_eq!(&rest[n..], b"<stream:stream");
}

#[test]
fn partial_input_is_buffered_and_reported_consumed() {
    let mut p = StreamParser::new(Limits::default());
    let (n, ev) = p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!((n, ev.is_some()), (HEADER.len(), true));
    let (n, ev) = p.feed(b"<message><bo").unwrap();
    assert_eq!((n, ev), (12, None));
    let (n, ev) = p.feed(b"dy>hi</body></message> ").unwrap();
    assert_eq!(n, 22);
    assert!(
        matches!(ev, Some(StreamEvent::Element(ref e)) if e.child("body", "jabber:client").is_some())
    );
    // Whitespace keepalive: consumed, no event.
    assert_eq!(p.feed(b" ").unwrap(), (1, None));
    assert_eq!(p.feed(b"").unwrap(), (0, None));
}

#[test]
fn reset_then_a_new_header() {
    let mut p = StreamParser::new(Limits::default());
    let input = format!("{HEADER}<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let (n, _) = p.feed(input.as_bytes()).unwrap();
    let (_, ev) = p.feed(&input.as_bytes()[n..]).unwrap();
    assert!(matches!(ev, Some(StreamEvent::Element(_))));

    p.reset();
    // A new document: a new XML declaration and header are fine.
    let (n, ev) = p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(n, HEADER.len());
    assert!(
        matches!(ev, Some(StreamEvent::Open { ref default_ns, .. }) if default_ns == "jabber:client")
    );
    let (_, ev) = p.feed(b"<presence/>").unwrap();
    assert!(matches!(ev, Some(StreamEvent::Element(_))));

    // Reset also clears a past error.
    assert!(p.feed(b"<!-- x -->").is_err());
    assert!(p.feed(b"<presence/>").is_err(), "errors are sticky");
    p.reset();
    assert!(matches!(
        p.feed(HEADER.as_bytes()),
        Ok((_, Some(StreamEvent::Open { .. })))
    ));
}

#[test]
fn header_without_xml_declaration_or_default_namespace() {
    let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
    let (events, err) = events_of(input.as_bytes());
    assert_eq!(err, None);
    assert!(
        matches!(&events[..], [StreamEvent::Open { header, default_ns }] if default_ns.is_empty() && header.attr("version") == Some("1.0"))
    );

    // A server-to-server header.
    let input =
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>";
    let (events, _) = events_of(input.as_bytes());
    assert!(
        matches!(&events[..], [StreamEvent::Open { default_ns, .. }] if default_ns == "jabber:server")
    );
}

#[test]
fn whitespace_before_the_document_is_skipped() {
    let input = format!(" \r\n{HEADER}<presence/>");
    let (events, err) = events_of(input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
    let mut p = StreamParser::framed(Limits::default());
    assert!(
        p.feed_message(b"\n <presence xmlns='jabber:client'/>")
            .is_ok()
    );
}

#[test]
fn self_closed_stream_root() {
    let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>";
    let mut p = StreamParser::new(Limits::default());
    let (n, ev) = p.feed(input.as_bytes()).unwrap();
    assert_eq!(n, input.len());
    assert!(matches!(ev, Some(StreamEvent::Open { .. })));
    assert_eq!(p.feed(b"").unwrap(), (0, Some(StreamEvent::Close)));
}

#[test]
fn after_close_input_is_ignored() {
    let input = format!("{HEADER}</stream:stream><message>junk");
    let (events, err) = events_of(input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.last(), Some(&StreamEvent::Close));
    let mut p = StreamParser::new(Limits::default());
    let mut rest = input.as_bytes();
    while let (n, Some(_)) = p.feed(rest).unwrap() {
        rest = &rest[n..];
    }
    assert_eq!(p.feed(b"<more/>").unwrap(), (7, None));
}

#[test]
fn wrong_root_is_invalid_namespace() {
    for input in [
        "<stream xmlns='jabber:client'>",
        "<stream:stream xmlns:stream='urn:wrong'>",
        "<s:foo xmlns:s='http://etherx.jabber.org/streams'>",
        "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    ] {
        assert_eq!(err_of(input), XmlError::InvalidNamespace, "{input}");
    }
    assert_eq!(XmlError::InvalidNamespace.condition(), "invalid-namespace");
}

#[test]
fn text_at_stream_level_is_bad_format() {
    let err = err_of(&format!("{HEADER}<presence/>hello<presence/>"));
    assert!(matches!(err, XmlError::BadFormat(_)), "{err:?}");
    assert_eq!(err.condition(), "bad-format");
    // Whitespace is fine, however it is spelled.
    let input = format!("{HEADER} \t\r\n<presence/>&#32;<![CDATA[ ]]>\n<presence/>");
    let (events, err) = events_of(input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(events.len(), 3);
}

#[test]
fn dtd_is_restricted_xml() {
    for input in [
        "<?xml version='1.0'?><!DOCTYPE stream:stream>",
        "<!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream>",
        &format!("{HEADER}<!DOCTYPE foo>"),
        &format!("{HEADER}<message><!ENTITY x 'y'></message>"),
    ] {
        let err = err_of(input);
        assert_eq!(err, XmlError::RestrictedXml, "{input}");
        assert_eq!(err.condition(), "restricted-xml");
    }
}

#[test]
fn comments_and_processing_instructions_are_restricted_xml() {
    for input in [
        "<!-- hi --><stream:stream>",
        &format!("{HEADER}<!-- keepalive -->"),
        &format!("{HEADER}<message><!-- hi --></message>"),
        "<?xml-stylesheet href='a'?><stream:stream>",
        "<?php echo 1; ?>",
        &format!("{HEADER}<message><?pi data?></message>"),
        &format!("{HEADER}<?xml version='1.0'?>"),
        "<?xml version='1.1'?><stream:stream>",
        "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>",
    ] {
        assert_eq!(err_of(input), XmlError::RestrictedXml, "{input}");
    }
}

#[test]
fn undeclared_entity_is_not_well_formed() {
    let err = err_of(&format!("{HEADER}<message><body>&custom;</body></message>"));
    assert!(matches!(err, XmlError::NotWellFormed(_)), "{err:?}");
    assert_eq!(err.condition(), "not-well-formed");
    // The predefined ones and character references are fine.
    let e = parse_one("<m>&lt;&gt;&amp;&apos;&quot;&#x41;&#66;</m>").unwrap();
    assert_eq!(e.text(), "<>&'\"AB");
}

#[test]
fn other_syntax_and_namespace_errors_are_not_well_formed() {
    for xml in [
        "<message></presence>",
        "<message a='1' a='2'/>",
        "<message xmlns:p='urn:a' xmlns:q='urn:a' p:a='1' q:a='2'/>",
        "<message xmlns='a' xmlns='b'/>",
        "<p:message/>",
        "<message p:a='1'/>",
        "<xmlns:message/>",
        "<message xmlns:p='http://www.w3.org/2000/xmlns/'/>",
        "<message xmlns:xml='urn:not-xml'/>",
        "<message xmlns:p=''/>",
        "<message>\u{1}</message>",
        "<message a=1/>",
        "<message>]]></message>",
    ] {
        let err = parse_one(xml).unwrap_err();
        assert!(matches!(err, XmlError::NotWellFormed(_)), "{xml}: {err:?}");
    }
    let mut input = HEADER.as_bytes().to_vec();
    input.extend_from_slice(b"<message>\xff</message>");
    assert!(matches!(
        events_of(&input).1,
        Some(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn billion_laughs_is_refused_without_blowing_up() {
    let mut input = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        input.push_str(&format!(
            "<!ENTITY lol{i} '{}'>",
            format!("&{prev};").repeat(10)
        ));
    }
    input.push_str("]><stream:stream>&lol9;</stream:stream>");
    let start = Instant::now();
    assert_eq!(err_of(&input), XmlError::RestrictedXml);
    // And the entity reference alone (no DTD) is just an undeclared entity.
    let err = err_of(&format!("{HEADER}<message>&lol9;&lol9;</message>"));
    assert!(matches!(err, XmlError::NotWellFormed(_)));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn deep_nesting_is_a_policy_violation_quickly() {
    let input = format!("{HEADER}{}", "<a>".repeat(10_000));
    let start = Instant::now();
    let err = err_of(&input);
    assert!(matches!(err, XmlError::PolicyViolation(_)), "{err:?}");
    assert_eq!(err.condition(), "policy-violation");
    assert!(start.elapsed() < Duration::from_secs(1));

    // Exactly max_depth is fine, one more is not.
    let limits = tight(1 << 20, 3, 64);
    let ok = format!("{HEADER}<a><b><c/></b></a>");
    assert_eq!(drive(limits, ok.as_bytes(), 1).1, None);
    let deep = format!("{HEADER}<a><b><c><d/></c></b></a>");
    assert!(matches!(
        drive(limits, deep.as_bytes(), 1).1,
        Some(XmlError::PolicyViolation(_))
    ));
}

#[test]
fn oversize_stanza_is_a_policy_violation_while_parsing() {
    let limits = tight(1024, 32, 64);
    let mut p = StreamParser::new(limits);
    let (n, _) = p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(n, HEADER.len());

    // Exactly at the limit is fine.
    let stanza = |len: usize| {
        let open = "<message><body>";
        let close = "</body></message>";
        format!(
            "{open}{}{close}",
            "x".repeat(len - open.len() - close.len())
        )
    };
    let (n, ev) = p.feed(stanza(1024).as_bytes()).unwrap();
    assert_eq!(n, 1024);
    assert!(ev.is_some());
    // Whitespace between stanzas does not count.
    assert_eq!(p.feed(&[b' '; 2000]).unwrap(), (2000, None));
    let (_, ev) = p.feed(stanza(1024).as_bytes()).unwrap();
    assert!(ev.is_some());

    // One byte more is not, and the error comes before the rest is read:
    // a never-ending stanza is refused once it passes the limit.
    assert!(matches!(
        p.feed(stanza(1025).as_bytes()),
        Err(XmlError::PolicyViolation(_))
    ));
    let mut p = StreamParser::new(limits);
    p.feed(HEADER.as_bytes()).unwrap();
    assert_eq!(p.feed(b"<message><body>").unwrap(), (15, None));
    let mut fed = 15;
    let err = loop {
        match p.feed(&[b'x'; 100]) {
            Ok((n, None)) => fed += n,
            Ok((_, Some(ev))) => panic!("{ev:?}"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, XmlError::PolicyViolation(_)));
    assert!(fed <= 1024, "buffered {fed} bytes");

    // The header is bounded too.
    let huge_header = format!(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        "x".repeat(2000)
    );
    assert!(matches!(
        drive(limits, huge_header.as_bytes(), 7).1,
        Some(XmlError::PolicyViolation(_))
    ));
    // Long attribute values up to the stanza limit are fine (rxml's own
    // token limit is kept out of the way).
    let long = format!("{HEADER}<message to='{}'/>", "x".repeat(100_000));
    assert_eq!(events_of(long.as_bytes()).1, None);
}

#[test]
fn too_many_attributes_is_a_policy_violation() {
    let limits = tight(1 << 20, 32, 3);
    // The header counts too.
    assert!(matches!(
        drive(limits, HEADER.as_bytes(), 5).1,
        Some(XmlError::PolicyViolation(_))
    ));
    const SHORT: &str =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let ok = format!("{SHORT}<message a='1' b='2' xml:lang='en'/>");
    assert_eq!(drive(limits, ok.as_bytes(), 5).1, None);
    let bad = format!("{SHORT}<message a='1' b='2' c='3' d='4'/>");
    assert!(matches!(
        drive(limits, bad.as_bytes(), 5).1,
        Some(XmlError::PolicyViolation(_))
    ));
    // Namespace declarations count.
    let decls = format!("{SHORT}<message xmlns='a' xmlns:b='b' xmlns:c='c' xmlns:d='d'/>");
    assert!(matches!(
        drive(limits, decls.as_bytes(), 5).1,
        Some(XmlError::PolicyViolation(_))
    ));
    let many: String = (0..100_000).map(|i| format!(" a{i}='x'")).collect();
    let start = Instant::now();
    assert!(matches!(
        events_of(format!("{SHORT}<message{many}/>").as_bytes()).1,
        Some(XmlError::PolicyViolation(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn framed_open_stanza_close() {
    let mut p = StreamParser::framed(Limits::default());
    let open = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0' xml:lang='en'/>";
    let StreamEvent::Open { header, default_ns } = p.feed_message(open).unwrap() else {
        panic!()
    };
    assert!(header.is("open", FRAMING_NS));
    assert_eq!(default_ns, FRAMING_NS);
    assert_eq!(header.attr("to"), Some("example.com"));
    assert_eq!(header.attr_ns(XML_NS, "lang"), Some("en"));

    let features = b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>";
    let StreamEvent::Element(f) = p.feed_message(features).unwrap() else {
        panic!()
    };
    assert!(f.is("features", STREAM_NS));

    let message =
        b"<message xmlns='jabber:client' to='romeo@example.net'><body>hi</body></message>\n";
    let StreamEvent::Element(m) = p.feed_message(message).unwrap() else {
        panic!()
    };
    assert_eq!(
        m.child("body", "jabber:client").map(|b| b.text()),
        Some("hi".into())
    );

    // `feed` in framed mode takes the input as one message.
    let close = b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>";
    assert_eq!(
        p.feed(close).unwrap(),
        (close.len(), Some(StreamEvent::Close))
    );
}

#[test]
fn framed_errors() {
    let mut p = StreamParser::framed(tight(200, 2, 4));
    for (message, condition) in [
        (&b"<message xmlns='jabber:client'>"[..], "not-well-formed"),
        (b"<a/><b/>", "not-well-formed"),
        (b"", "not-well-formed"),
        (b"  ", "not-well-formed"),
        (b" <?xml-stylesheet href='a'?><a/>", "restricted-xml"),
        (b"<!DOCTYPE a><a/>", "restricted-xml"),
        (b"<a/><!-- x -->", "restricted-xml"),
        (b"<a><b><c/></b></a>", "policy-violation"),
        (b"<a a='1' b='2' c='3' d='4' e='5'/>", "policy-violation"),
        (&[b' '; 201], "policy-violation"),
        (
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'><x/></open>",
            "bad-format",
        ),
    ] {
        let err = p.feed_message(message).unwrap_err();
        assert_eq!(
            err.condition(),
            condition,
            "{}: {err:?}",
            String::from_utf8_lossy(message)
        );
    }
    // Errors do not stick across messages.
    assert!(p.feed_message(b"<presence xmlns='jabber:client'/>").is_ok());
    // An XML declaration and surrounding whitespace are fine.
    assert!(
        p.feed_message(b"<?xml version='1.0'?>\n<presence xmlns='jabber:client'/>\n")
            .is_ok()
    );
}

#[test]
fn feed_message_on_a_tcp_parser_wants_exactly_one_event() {
    let mut p = StreamParser::new(Limits::default());
    assert!(matches!(
        p.feed_message(HEADER.as_bytes()),
        Ok(StreamEvent::Open { .. })
    ));
    assert!(matches!(
        p.feed_message(b"<presence/>"),
        Ok(StreamEvent::Element(_))
    ));
    assert!(matches!(
        p.feed_message(b"<presence/><presence/>"),
        Err(XmlError::BadFormat(_))
    ));
}

#[test]
fn serializer_round_trip() {
    let xml = "<message to='romeo@example.net' type='chat' xml:lang='en' \
        xmlns:p='urn:example:p' p:attr='a&amp;b&lt;&apos;&quot;&gt;'>\
        <body>1 &lt; 2 &amp;&amp; 3 &gt; 2 ]]&gt; \"quoted\" 'single'</body>\
        <x xmlns='urn:example:x'><y xmlns=''><z/></y><w xml:lang='de'>Grüße\r\n\ttab</w></x>\
        <html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p>Hi</p></body></html>\
        </message>";
    let parsed = parse_one(xml).unwrap();
    assert_eq!(parsed.attr_ns("urn:example:p", "attr"), Some("a&b<'\">"));
    assert_round_trip(&parsed);

    // Written into the stream, relative to the stream's default namespace.
    let mut out = Vec::new();
    parsed.write_to(&mut out, "jabber:client");
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with("<message "), "{text}");
    assert!(!text.contains("xmlns='jabber:client'"), "{text}");
    let again = parse_one(&text).unwrap();
    assert_eq!(again, parsed);

    // Hand-built trees: escaping, CR, attribute whitespace, namespaced
    // attributes in several namespaces.
    let built = Element::new("iq", "jabber:client")
        .with_attr("id", "a'b\"c<d>&e\tf\ng\rh")
        .with_child(
            Element::new("query", "urn:q")
                .with_text("line1\r\nline2 & <tag>")
                .with_child(Element::new("item", "urn:q").with_attr("x", "")),
        )
        .with_child(Element {
            ns: "".into(),
            name: "plain".into(),
            attrs: vec![
                Attribute {
                    ns: Some("urn:a".into()),
                    name: "one".into(),
                    value: "1".into(),
                },
                Attribute {
                    ns: Some("urn:b".into()),
                    name: "one".into(),
                    value: "2".into(),
                },
                Attribute {
                    ns: Some("urn:a".into()),
                    name: "two".into(),
                    value: "3".into(),
                },
                Attribute {
                    ns: Some(XML_NS.into()),
                    name: "lang".into(),
                    value: "fr".into(),
                },
            ],
            children: vec![],
        });
    assert_round_trip(&built);
    let xml = built.to_xml();
    assert!(xml.starts_with("<iq xmlns='jabber:client' id="), "{xml}");
    assert!(xml.contains("<item x=''/>"), "{xml}");
    assert!(xml.contains("xmlns=''"), "{xml}");
    assert!(xml.contains("xml:lang='fr'"), "{xml}");
}

#[test]
fn serializer_refuses_to_write_broken_xml() {
    let e = Element::new("a", "")
        .with_attr("xmlns", "urn:sneaky")
        .with_attr("v", "nul\u{0}and\u{FFFF}")
        .with_text("bell\u{7}");
    let xml = e.to_xml();
    assert_eq!(xml, "<a v='nul\u{FFFD}and\u{FFFD}'>bell\u{FFFD}</a>");
    let back = StreamParser::framed(Limits::default())
        .feed_message(xml.as_bytes())
        .unwrap();
    assert!(matches!(back, StreamEvent::Element(ref b) if b.ns.is_empty()));
}

#[test]
fn parser_is_send() {
    fn send<T: Send>() {}
    send::<StreamParser>();
}
