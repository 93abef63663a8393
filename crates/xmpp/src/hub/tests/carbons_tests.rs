//! Message carbons (XEP-0280).

use tributary_xmpp_xml::Element;

use super::*;

fn enable(h: &mut H, session: SessionId, jid: &str) {
    let out = h.send(
        session,
        iq("set", "c", None, Some(Element::new("enable", ns::CARBONS))),
    );
    check(&out, vec![d(session, result("c", jid, None, None))]);
}

fn carbon(kind: &str, owner: &str, to: &str, original: Element) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", bare(owner))
        .with_attr("to", to);
    if let Some(t) = original.attr("type") {
        m.set_attr("type", t);
    }
    m.with_child(
        Element::new(kind, ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(original)),
    )
}

/// alice/a (1) and alice/b (2) with carbons, alice/c (3) without; bob/b (9).
fn setup() -> H {
    let mut h = H::new();
    h.online(9, "bob", "b");
    h.online(1, "alice", "a");
    h.online(2, "alice", "b");
    h.online(3, "alice", "c");
    enable(&mut h, 1, &full("alice", "a"));
    enable(&mut h, 2, &full("alice", "b"));
    h
}

#[test]
fn received_copy_for_a_message_to_one_resource() {
    let mut h = setup();
    let m = message(&full("alice", "a"), "chat", "hi");
    let out = h.send(9, m.clone());
    let delivered = m.with_attr("from", full("bob", "b"));
    check(
        &out,
        vec![
            d(1, delivered.clone()),
            d(
                2,
                carbon("received", "alice", &full("alice", "b"), delivered),
            ),
        ],
    );
}

#[test]
fn no_received_copy_when_the_bare_jid_fan_out_reached_them() {
    let mut h = setup();
    let m = message(&bare("alice"), "chat", "hi");
    let out = h.send(9, m.clone());
    let delivered = m.with_attr("from", full("bob", "b"));
    check(
        &out,
        vec![
            d(1, delivered.clone()),
            d(2, delivered.clone()),
            d(3, delivered),
        ],
    );
}

#[test]
fn sent_copy_to_the_other_enabled_resources() {
    let mut h = setup();
    let m = message(&full("bob", "b"), "chat", "yo");
    let out = h.send(1, m.clone());
    let delivered = m.with_attr("from", full("alice", "a"));
    check(
        &out,
        vec![
            d(9, delivered.clone()),
            d(2, carbon("sent", "alice", &full("alice", "b"), delivered)),
        ],
    );
}

#[test]
fn sent_copy_also_when_stored_offline() {
    let mut h = setup();
    let m = message(&bare("carol"), "chat", "later");
    let out = h.send(1, m.clone());
    let delivered = m.with_attr("from", full("alice", "a"));
    assert_eq!(
        to_session(&out, 2),
        vec![norm(&carbon(
            "sent",
            "alice",
            &full("alice", "b"),
            delivered
        ))]
    );
}

#[test]
fn private_and_no_copy_are_not_copied_and_private_is_stripped() {
    let mut h = setup();
    let m = message(&full("bob", "b"), "chat", "secret")
        .with_child(Element::new("private", ns::CARBONS));
    let out = h.send(1, m);
    let delivered =
        message(&full("bob", "b"), "chat", "secret").with_attr("from", full("alice", "a"));
    check(&out, vec![d(9, delivered)]);

    let m =
        message(&full("alice", "a"), "chat", "x").with_child(Element::new("no-copy", ns::HINTS));
    let out = h.send(9, m.clone());
    check(&out, vec![d(1, m.with_attr("from", full("bob", "b")))]);
}

#[test]
fn only_chat_and_normal_with_body_are_copied() {
    let mut h = setup();
    let headline = message(&full("alice", "a"), "headline", "x");
    assert_eq!(h.send(9, headline).len(), 1);
    let bodyless = Element::new("message", ns::CLIENT)
        .with_attr("to", full("alice", "a"))
        .with_child(Element::new("x", "urn:example"));
    assert_eq!(h.send(9, bodyless).len(), 1);
    let normal = message(&full("alice", "a"), "normal", "x");
    assert_eq!(h.send(9, normal).len(), 2);
}

#[test]
fn disable_stops_copies() {
    let mut h = setup();
    let out = h.send(
        2,
        iq("set", "d", None, Some(Element::new("disable", ns::CARBONS))),
    );
    check(
        &out,
        vec![d(2, result("d", &full("alice", "b"), None, None))],
    );
    let out = h.send(9, message(&full("alice", "a"), "chat", "hi"));
    assert_eq!(out.len(), 1);
}

#[test]
fn enable_with_get_is_bad_request() {
    let mut h = setup();
    let q = iq("get", "g", None, Some(Element::new("enable", ns::CARBONS)));
    let out = h.send(3, q.clone());
    let sent = q.with_attr("from", full("alice", "c"));
    check(
        &out,
        vec![d(3, error_reply(&sent, "modify", "bad-request"))],
    );
}

#[test]
fn between_two_resources_of_one_account_the_sender_gets_no_copy() {
    let mut h = setup();
    let m = message(&full("alice", "b"), "chat", "note to self");
    let out = h.send(1, m.clone());
    check(&out, vec![d(2, m.with_attr("from", full("alice", "a")))]);
}
