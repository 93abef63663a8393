//! Encodings and restore errors.

use tributary_xmpp_xml::{Attribute, Element, XML_NS};

use super::super::offline::timestamp;
use super::super::persist::{ROSTER_TABLE, from_tokens, to_tokens};
use super::super::{HubError, StanzaError};
use super::*;

#[test]
fn tokens_round_trip() {
    let mut e = message("bob@localhost", "chat", "a < b & c").with_child(
        Element::new("x", "urn:x")
            .with_text("t1")
            .with_child(Element::new("y", "urn:y"))
            .with_text("t2"),
    );
    e.attrs.push(Attribute {
        ns: Some(XML_NS.to_string()),
        name: "lang".into(),
        value: "en".into(),
    });
    let toks = to_tokens(&e);
    let json = serde_json::to_vec(&toks).expect("json");
    let back = from_tokens(serde_json::from_slice(&json).expect("json")).expect("tokens");
    assert_eq!(back, e);
}

#[test]
fn deep_elements_round_trip_without_recursion() {
    let mut e = Element::new("leaf", "urn:x");
    for _ in 0..1500 {
        e = Element::new("n", "urn:x").with_child(e);
    }
    let json = serde_json::to_vec(&to_tokens(&e)).expect("json");
    let back = from_tokens(serde_json::from_slice(&json).expect("json")).expect("tokens");
    assert!(back == e);
    // Dropping deep trees recurses; unwind them by hand.
    for mut el in [back, e] {
        while let Some(tributary_xmpp_xml::Node::Element(c)) = el.children.pop() {
            el = c;
        }
    }
}

#[test]
fn bad_tokens_are_rejected() {
    let e = Element::new("a", "urn:x");
    let mut toks = to_tokens(&e);
    toks.pop();
    assert!(from_tokens(toks).is_err());
    let mut toks = to_tokens(&e);
    toks.extend(to_tokens(&e));
    assert!(from_tokens(toks).is_err());
    assert!(from_tokens(Vec::new()).is_err());
}

#[test]
fn corrupt_rows_and_unknown_tables_fail_restore() {
    let mut h = H::new();
    let err = h
        .hub
        .restore(ROSTER_TABLE, vec![(bare("alice"), b"{not json".to_vec())])
        .expect_err("corrupt");
    let HubError::Corrupt { table, key, .. } = err;
    assert_eq!(
        (table.as_str(), key.as_str()),
        (ROSTER_TABLE, bare("alice").as_str())
    );
    assert!(
        h.hub
            .restore("xmpp_nope", vec![("k".into(), Vec::new())])
            .is_err()
    );
    assert!(
        h.hub
            .restore("xmpp_offline", vec![("nokey".into(), Vec::new())])
            .is_err()
    );
    assert!(
        h.hub.restore("xmpp_nope", Vec::new()).is_ok(),
        "no rows, nothing to complain about"
    );
}

#[test]
fn timestamps() {
    assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(timestamp(NOW), NOW_STAMP);
    assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
}

#[test]
fn error_reply_swaps_addresses_and_keeps_payload() {
    let m = message("bob@localhost/b", "chat", "x")
        .with_attr("from", "alice@localhost/a")
        .with_attr("id", "m1");
    let reply = StanzaError::service_unavailable()
        .with_text("gone")
        .reply_to(&m);
    assert_eq!(reply.attr("to"), Some("alice@localhost/a"));
    assert_eq!(reply.attr("from"), Some("bob@localhost/b"));
    assert_eq!(reply.attr("id"), Some("m1"));
    assert_eq!(reply.attr("type"), Some("error"));
    assert!(reply.child("body", ns::CLIENT).is_some());
    let error = reply.child("error", ns::CLIENT).expect("error");
    assert_eq!(error.attr("type"), Some("cancel"));
    assert!(error.child("service-unavailable", ns::STANZAS).is_some());
    assert_eq!(
        error.child("text", ns::STANZAS).map(|t| t.text()),
        Some("gone".to_string())
    );
    assert_eq!(StanzaError::forbidden().to_string(), "forbidden (auth)");
}
