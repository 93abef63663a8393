//! Harness shared by the cargo-fuzz target, the stable corpus-replay test and
//! the property tests.

use crate::{Element, Limits, StreamEvent, StreamParser, XmlError};

/// How a `xml_stream` input is run, from its first octet: bit 0 picks
/// WebSocket mode (the rest split into messages at NUL bytes), bit 1 tight
/// limits (256 bytes, depth 4, 4 attributes) instead of the defaults, bits
/// 2-7 the TCP chunk size (1 + n).
pub fn config(octet: u8) -> (bool, Limits, usize) {
    let framed = octet & 1 != 0;
    let limits = if octet & 2 != 0 {
        Limits {
            max_stanza_bytes: 256,
            max_depth: 4,
            max_attributes: 4,
        }
    } else {
        Limits::default()
    };
    (framed, limits, 1 + usize::from(octet >> 2))
}

/// Feeds `data` to a TCP-mode parser `chunk` bytes at a time, as a socket
/// would deliver them, keeping unconsumed bytes the way a caller must, until
/// the data runs out or an error. Asserts the `feed` contract on the way:
/// never more consumed than offered, everything consumed when no event
/// completed, and a bounded number of events (no spinning).
pub fn drive(limits: Limits, data: &[u8], chunk: usize) -> (Vec<StreamEvent>, Option<XmlError>) {
    let mut parser = StreamParser::new(limits);
    let mut pending: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            match parser.feed(&pending) {
                Ok((n, event)) => {
                    assert!(n <= pending.len(), "consumed {n} of {}", pending.len());
                    pending.drain(..n);
                    match event {
                        Some(e) => {
                            events.push(e);
                            assert!(events.len() <= data.len() + 1, "events without input");
                        }
                        None => {
                            assert!(pending.is_empty(), "no event, yet bytes left over");
                            break;
                        }
                    }
                }
                Err(e) => {
                    assert_eq!(parser.feed(b" "), Err(e.clone()), "errors are sticky");
                    return (events, Some(e));
                }
            }
        }
    }
    (events, None)
}

/// Limits for re-parsing serialized output: the serializer may add
/// namespace declarations and escapes, so the original limits do not apply.
fn generous() -> Limits {
    Limits {
        max_stanza_bytes: 1 << 30,
        max_depth: 1 << 16,
        max_attributes: 1 << 16,
    }
}

/// Serializes `e` as a standalone document and parses it back (WebSocket
/// mode), asserting the tree survives.
pub fn assert_round_trip(e: &Element) {
    let xml = e.to_xml();
    let again = StreamParser::framed(generous()).feed_message(xml.as_bytes());
    match again {
        Ok(StreamEvent::Element(back)) => assert_eq!(&back, e, "round trip of {xml}"),
        // `<open/>` and `<close/>` in the framing namespace come back as
        // those events.
        Ok(StreamEvent::Open { header, .. }) => assert_eq!(&header, e, "round trip of {xml}"),
        Ok(StreamEvent::Close) => assert!(e.is("close", crate::FRAMING_NS)),
        Err(err) => panic!("{xml} does not parse back: {err}"),
    }
}

/// `xml_stream`: parse arbitrary bytes (never a panic, never a stall); the
/// events and error must not depend on how the bytes are split, and every
/// element parsed must serialize and parse back to itself.
pub fn stream_target(data: &[u8]) {
    let Some((&octet, stream)) = data.split_first() else {
        return;
    };
    let (framed, limits, chunk) = config(octet);
    if framed {
        let mut parser = StreamParser::framed(limits);
        for message in stream.split(|&b| b == 0) {
            match parser.feed_message(message) {
                Ok(StreamEvent::Element(e)) => assert_round_trip(&e),
                Ok(StreamEvent::Open { header, .. }) => assert_round_trip(&header),
                Ok(StreamEvent::Close) | Err(_) => {}
            }
        }
        return;
    }
    let whole = drive(limits, stream, stream.len());
    for event in &whole.0 {
        match event {
            StreamEvent::Element(e) => assert_round_trip(e),
            StreamEvent::Open { header, .. } => assert_round_trip(header),
            StreamEvent::Close => {}
        }
    }
    assert_eq!(drive(limits, stream, chunk), whole, "chunk size {chunk}");
    if stream.len() <= 512 {
        assert_eq!(drive(limits, stream, 1), whole, "byte by byte");
    }
}
