//! The blocking command (XEP-0191).

use tributary_xmpp_xml::Element;

use super::super::blocking::BLOCKING_ERRORS;
use super::super::persist::BLOCKLIST_TABLE;
use super::subscription_tests::friends;
use super::*;

fn items(cmd: &str, jids: &[&str]) -> Element {
    let mut e = Element::new(cmd, ns::BLOCKING);
    for j in jids {
        e.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", *j));
    }
    e
}

fn block_iq(id: &str, jids: &[&str]) -> Element {
    iq("set", id, None, Some(items("block", jids)))
}

fn unblock_iq(id: &str, jids: &[&str]) -> Element {
    iq("set", id, None, Some(items("unblock", jids)))
}

fn blocklist_get(h: &mut H, session: SessionId) -> Vec<Output> {
    h.send(
        session,
        iq(
            "get",
            "bl",
            None,
            Some(Element::new("blocklist", ns::BLOCKING)),
        ),
    )
}

fn blocked_reply(stanza: &Element) -> Element {
    let mut reply = error_reply(stanza, "modify", "not-acceptable");
    if let Some(e) = reply.child_mut("error", ns::CLIENT) {
        e.push_child(Element::new("blocked", BLOCKING_ERRORS));
    }
    reply
}

#[test]
fn block_pushes_persists_and_sends_unavailable_both_ways() {
    let mut h = friends();
    h.online(3, "alice", "c");
    let (aa, ac, bb) = (full("alice", "a"), full("alice", "c"), full("bob", "b"));
    let out = blocklist_get(&mut h, 1);
    check(
        &out,
        vec![d(
            1,
            result(
                "bl",
                &aa,
                None,
                Some(Element::new("blocklist", ns::BLOCKING)),
            ),
        )],
    );

    let out = h.send(3, block_iq("b1", &[&bare("bob")]));
    check(
        &out,
        vec![
            put(BLOCKLIST_TABLE, &bare("alice")),
            d(3, result("b1", &ac, None, None)),
            // Only the resource that retrieved the list gets the push.
            d(
                1,
                iq(
                    "set",
                    "push",
                    Some(&aa),
                    Some(items("block", &[&bare("bob")])),
                ),
            ),
            // alice's resources vanish for bob, and bob for them.
            d(2, unavailable(&aa, &bb)),
            d(1, unavailable(&bb, &aa)),
            d(2, unavailable(&ac, &bb)),
            d(3, unavailable(&bb, &ac)),
        ],
    );
    let out = blocklist_get(&mut h, 3);
    check(
        &out,
        vec![d(
            3,
            result("bl", &ac, None, Some(items("blocklist", &[&bare("bob")]))),
        )],
    );

    // Presence no longer flows either way.
    assert!(to_session(&h.send(2, presence_prio(1)), 1).is_empty());
    assert!(to_session(&h.send(1, presence_prio(1)), 2).is_empty());
}

#[test]
fn stanzas_from_and_to_blocked_jids() {
    let mut h = friends();
    h.send(1, block_iq("b1", &[&bare("bob")]));
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));

    // Incoming message and iq: service-unavailable; presence dropped.
    let m = message(&aa, "chat", "hi");
    let out = h.send(2, m.clone());
    check(
        &out,
        vec![d(
            2,
            error_reply(
                &m.with_attr("from", bb.clone()),
                "cancel",
                "service-unavailable",
            ),
        )],
    );
    let q = iq(
        "get",
        "v",
        Some(&aa),
        Some(Element::new("query", ns::VERSION)),
    );
    let out = h.send(2, q.clone());
    check(
        &out,
        vec![d(
            2,
            error_reply(
                &q.with_attr("from", bb.clone()),
                "cancel",
                "service-unavailable",
            ),
        )],
    );
    assert!(h.send(2, presence_to(&aa, "")).is_empty());
    assert!(
        h.send(2, presence_to(&bare("alice"), "subscribe"))
            .is_empty()
    );

    // Outgoing: not-acceptable with <blocked/>.
    let m = message(&bb, "chat", "hi");
    let out = h.send(1, m.clone());
    check(
        &out,
        vec![d(1, blocked_reply(&m.with_attr("from", aa.clone())))],
    );
    let p = presence_to(&bare("bob"), "");
    let out = h.send(1, p.clone());
    check(
        &out,
        vec![d(1, blocked_reply(&p.with_attr("from", aa.clone())))],
    );
}

#[test]
fn unblock_restores_presence_and_unblock_all() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    blocklist_get(&mut h, 1);
    h.send(1, block_iq("b1", &[&bare("bob"), "example.org"]));
    let out = h.send(1, unblock_iq("u1", &[&bare("bob")]));
    check(
        &out,
        vec![
            put(BLOCKLIST_TABLE, &bare("alice")),
            d(1, result("u1", &aa, None, None)),
            d(
                1,
                iq(
                    "set",
                    "push",
                    Some(&aa),
                    Some(items("unblock", &[&bare("bob")])),
                ),
            ),
            d(2, with_addr(presence(), &aa, &bb)),
            d(1, with_addr(presence(), &bb, &aa)),
        ],
    );
    let out = h.send(1, unblock_iq("u2", &[]));
    check(
        &out,
        vec![
            del(BLOCKLIST_TABLE, &bare("alice")),
            d(1, result("u2", &aa, None, None)),
            d(1, iq("set", "push", Some(&aa), Some(items("unblock", &[])))),
        ],
    );
    assert!(h.hub.blocklists.is_empty());
}

#[test]
fn domain_and_full_jid_items_match() {
    let mut h = friends();
    h.online(3, "carol", "c");
    h.send(1, block_iq("b1", &[DOMAIN]));
    let m = message(&full("alice", "a"), "chat", "x");
    let out = h.send(3, m);
    assert_eq!(to_session(&out, 3).len(), 1, "an error back to carol");
    assert!(to_session(&out, 1).is_empty());

    let mut h = friends();
    h.online(3, "carol", "c");
    h.send(1, block_iq("b1", &[&full("carol", "c")]));
    assert!(to_session(&h.send(3, message(&full("alice", "a"), "chat", "x")), 1).is_empty());
    h.online(4, "carol", "other");
    assert_eq!(
        to_session(&h.send(4, message(&full("alice", "a"), "chat", "x")), 1).len(),
        1
    );
}

#[test]
fn bad_block_requests() {
    let mut h = friends();
    let aa = full("alice", "a");
    let q = block_iq("b", &[]);
    let out = h.send(1, q.clone());
    check(
        &out,
        vec![d(
            1,
            error_reply(&q.with_attr("from", aa.clone()), "modify", "bad-request"),
        )],
    );
    let q = block_iq("b", &["@bad@"]);
    let out = h.send(1, q.clone());
    check(
        &out,
        vec![d(
            1,
            error_reply(&q.with_attr("from", aa), "modify", "jid-malformed"),
        )],
    );
}

#[test]
fn blocklist_survives_restart() {
    let mut h = friends();
    let mut store = BTreeMap::new();
    let out = h.send(1, block_iq("b1", &[&bare("bob"), "example.org"]));
    apply(&mut store, &out);
    let mut h = restart(&store);
    h.bind(1, "alice", "a");
    let out = blocklist_get(&mut h, 1);
    check(
        &out,
        vec![d(
            1,
            result(
                "bl",
                &full("alice", "a"),
                None,
                Some(items("blocklist", &[&bare("bob"), "example.org"])),
            ),
        )],
    );
}
