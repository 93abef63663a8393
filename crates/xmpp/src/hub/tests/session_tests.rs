//! Resource binding, conflicts, stamping.

use tributary_xmpp_xml::Element;

use super::subscription_tests::friends;
use super::*;

#[test]
fn generated_resources_are_unique() {
    let mut h = H::new();
    let mut out = Vec::new();
    let a = h.hub.bind(1, "alice", None, &mut out).expect("bind");
    let b = h.hub.bind(2, "alice", None, &mut out).expect("bind");
    assert!(out.is_empty());
    assert_ne!(a, b);
    assert_eq!(a.to_bare().to_string(), bare("alice"));
    assert!(a.resource().as_str().starts_with("tributary-"));
    assert_eq!(h.hub.jid_of(1), Some(&a));
}

#[test]
fn invalid_resource_or_username_or_double_bind() {
    let mut h = H::new();
    let mut out = Vec::new();
    let e = h
        .hub
        .bind(1, "alice", Some(""), &mut out)
        .expect_err("empty");
    assert_eq!((e.kind, e.condition), ("modify", "bad-request"));
    let e = h
        .hub
        .bind(1, "alice", Some("a\u{7}b"), &mut out)
        .expect_err("control char");
    assert_eq!(e.condition, "bad-request");
    let e = h
        .hub
        .bind(1, "al@ice", Some("r"), &mut out)
        .expect_err("bad node");
    assert_eq!(e.condition, "bad-request");
    h.bind(1, "alice", "r");
    let e = h
        .hub
        .bind(1, "alice", Some("s"), &mut out)
        .expect_err("twice");
    assert_eq!(e.condition, "not-allowed");
    assert!(out.is_empty());
}

#[test]
fn resourceprep_normalizes() {
    let mut h = H::new();
    let mut out = Vec::new();
    // U+00A0 (no-break space) maps to a space under resourceprep.
    let jid = h
        .hub
        .bind(1, "Alice", Some("x\u{a0}y"), &mut out)
        .expect("bind");
    assert_eq!(jid.to_string(), format!("{}/x y", bare("alice")));
}

#[test]
fn conflict_replaces_the_old_session() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let mut out = Vec::new();
    let jid = h.hub.bind(5, "alice", Some("a"), &mut out).expect("bind");
    assert_eq!(jid.to_string(), aa);
    check(
        &out,
        vec![Shape::Close(1, "conflict"), d(2, unavailable(&aa, &bb))],
    );
    assert_eq!(h.hub.jid_of(1), None);
    assert_eq!(h.hub.jid_of(5), Some(&jid));
    // The new session is the one messages go to; unbinding the old is a no-op.
    assert!(h.unbind(1).is_empty());
    let out = h.send(2, message(&aa, "chat", "hi"));
    assert_eq!(to_session(&out, 5).len(), 1);
}

#[test]
fn stanzas_of_unbound_sessions_and_other_namespaces_are_ignored() {
    let mut h = friends();
    assert!(h.send(42, message(&bare("bob"), "chat", "x")).is_empty());
    let foreign = Element::new("message", "jabber:server").with_attr("to", bare("bob"));
    assert!(h.send(1, foreign).is_empty());
    assert!(h.send(1, Element::new("r", ns::SM)).is_empty());
}
