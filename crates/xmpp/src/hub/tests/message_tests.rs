//! Message routing, priorities, offline storage, restart, requeueing.

use tributary_xmpp_xml::Element;

use super::super::persist::OFFLINE_TABLE;
use super::*;

fn sent(stanza: Element, from: &str) -> Element {
    stanza.with_attr("from", from)
}

fn delay() -> Element {
    Element::new("delay", ns::DELAY)
        .with_attr("from", DOMAIN)
        .with_attr("stamp", NOW_STAMP)
}

fn offline_key(user: &str, seq: u64) -> String {
    format!("{}/{seq:020}", bare(user))
}

/// bob/b online; alice has resources a (5), b (5), c (1), d (-1).
fn alice_with_priorities() -> H {
    let mut h = H::new();
    h.online(9, "bob", "b");
    for (s, res, prio) in [(1, "a", 5), (2, "b", 5), (3, "c", 1), (4, "d", -1)] {
        h.bind(s, "alice", res);
        h.send(s, presence_prio(prio));
    }
    h
}

#[test]
fn to_a_bound_full_jid_goes_there_with_from_stamped() {
    let mut h = alice_with_priorities();
    let m = message(&full("alice", "d"), "chat", "hi").with_attr("from", "spoofed@evil");
    let out = h.send(9, m);
    let expected = sent(
        message(&full("alice", "d"), "chat", "hi"),
        &full("bob", "b"),
    );
    check(&out, vec![d(4, expected)]);
}

#[test]
fn to_bare_jid_goes_to_all_highest_non_negative_priorities() {
    let mut h = alice_with_priorities();
    let m = message(&bare("alice"), "chat", "hi");
    let out = h.send(9, m.clone());
    let expected = sent(m, &full("bob", "b"));
    check(&out, vec![d(1, expected.clone()), d(2, expected)]);

    let m = message(&bare("alice"), "", "normal");
    let out = h.send(9, m);
    assert_eq!(out.len(), 2);

    // Headlines go to every non-negative resource.
    let m = message(&bare("alice"), "headline", "news");
    let out = h.send(9, m.clone());
    let expected = sent(m, &full("bob", "b"));
    check(
        &out,
        vec![
            d(1, expected.clone()),
            d(2, expected.clone()),
            d(3, expected),
        ],
    );
}

#[test]
fn to_unbound_full_jid_depends_on_type() {
    let mut h = alice_with_priorities();
    let bb = full("bob", "b");
    let gone = full("alice", "gone");
    // chat/normal: as if to the bare JID.
    let out = h.send(9, message(&gone, "chat", "x"));
    check(
        &out,
        vec![
            d(1, sent(message(&gone, "chat", "x"), &bb)),
            d(2, sent(message(&gone, "chat", "x"), &bb)),
        ],
    );
    // groupchat: service-unavailable.
    let out = h.send(9, message(&gone, "groupchat", "x"));
    let m = sent(message(&gone, "groupchat", "x"), &bb);
    check(
        &out,
        vec![d(9, error_reply(&m, "cancel", "service-unavailable"))],
    );
    // headline and error: dropped.
    assert!(h.send(9, message(&gone, "headline", "x")).is_empty());
    assert!(h.send(9, message(&gone, "error", "x")).is_empty());
}

#[test]
fn groupchat_and_error_to_bare_jid() {
    let mut h = alice_with_priorities();
    let out = h.send(9, message(&bare("alice"), "groupchat", "x"));
    let m = sent(message(&bare("alice"), "groupchat", "x"), &full("bob", "b"));
    check(
        &out,
        vec![d(9, error_reply(&m, "cancel", "service-unavailable"))],
    );
    assert!(h.send(9, message(&bare("alice"), "error", "x")).is_empty());
}

#[test]
fn unknown_user_remote_domain_and_server_domain() {
    let mut h = alice_with_priorities();
    let bb = full("bob", "b");
    let out = h.send(9, message(&bare("nobody"), "chat", "x"));
    let m = sent(message(&bare("nobody"), "chat", "x"), &bb);
    check(
        &out,
        vec![d(9, error_reply(&m, "cancel", "service-unavailable"))],
    );
    // Errors never get an error back.
    assert!(h.send(9, message(&bare("nobody"), "error", "x")).is_empty());

    let out = h.send(9, message("x@example.org", "chat", "x"));
    let m = sent(message("x@example.org", "chat", "x"), &bb);
    check(
        &out,
        vec![d(9, error_reply(&m, "cancel", "remote-server-not-found"))],
    );

    let out = h.send(9, message(DOMAIN, "chat", "x"));
    let m = sent(message(DOMAIN, "chat", "x"), &bb);
    check(
        &out,
        vec![d(9, error_reply(&m, "cancel", "service-unavailable"))],
    );
}

#[test]
fn malformed_to_is_jid_malformed() {
    let mut h = alice_with_priorities();
    let out = h.send(9, message("@@", "chat", "x"));
    let m = sent(message("@@", "chat", "x"), &full("bob", "b"));
    check(&out, vec![d(9, error_reply(&m, "modify", "jid-malformed"))]);
}

#[test]
fn message_without_to_goes_to_own_bare_jid() {
    let mut h = alice_with_priorities();
    let m = Element::new("message", ns::CLIENT)
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text("note"));
    let out = h.send(3, m.clone());
    let expected = sent(m, &full("alice", "c"));
    check(&out, vec![d(1, expected.clone()), d(2, expected)]);
}

#[test]
fn negative_priority_only_means_offline_storage_then_delivery() {
    let mut h = H::new();
    h.online(9, "bob", "b");
    h.bind(1, "alice", "neg");
    h.send(1, presence_prio(-1));
    let m = message(&bare("alice"), "chat", "stored");
    let out = h.send(9, m.clone());
    check(&out, vec![put(OFFLINE_TABLE, &offline_key("alice", 1))]);

    // The resource raises its priority: the stored message comes.
    let out = h.send(1, presence_prio(0));
    let an = full("alice", "neg");
    let stored = sent(m, &full("bob", "b")).with_child(delay());
    check(
        &out,
        vec![
            d(1, with_addr(presence_prio(0), &an, &an)),
            d(1, stored),
            del(OFFLINE_TABLE, &offline_key("alice", 1)),
        ],
    );
}

#[test]
fn offline_messages_survive_a_restart_and_come_with_delay() {
    let mut h = H::new();
    let mut store = BTreeMap::new();
    h.online(9, "bob", "b");
    let bb = full("bob", "b");
    let m1 = message(&bare("alice"), "chat", "one");
    let m2 = message(&full("alice", "phone"), "", "two");
    let out = h.send(9, m1.clone());
    apply(&mut store, &out);
    let out = h.send(9, m2.clone());
    apply(&mut store, &out);
    check(&out, vec![put(OFFLINE_TABLE, &offline_key("alice", 2))]);
    // Not worth storing: headline, chat states alone, no-store.
    let chatstate = Element::new("message", ns::CLIENT)
        .with_attr("to", bare("alice"))
        .with_attr("type", "chat")
        .with_child(Element::new(
            "active",
            "http://jabber.org/protocol/chatstates",
        ));
    assert!(h.send(9, chatstate).is_empty());
    assert!(
        h.send(9, message(&bare("alice"), "headline", "x"))
            .is_empty()
    );
    let no_store =
        message(&bare("alice"), "chat", "x").with_child(Element::new("no-store", ns::HINTS));
    assert!(h.send(9, no_store).is_empty());

    let mut h = restart(&store);
    h.online(9, "bob", "b");
    // Sequence numbers continue.
    let out = h.send(9, message(&bare("alice"), "chat", "three"));
    apply(&mut store, &out);
    check(&out, vec![put(OFFLINE_TABLE, &offline_key("alice", 3))]);

    h.bind(1, "alice", "a");
    let out = h.send(1, presence());
    apply(&mut store, &out);
    let aa = full("alice", "a");
    check(
        &out,
        vec![
            d(1, with_addr(presence(), &aa, &aa)),
            d(1, sent(m1, &bb).with_child(delay())),
            d(1, sent(m2, &bb).with_child(delay())),
            d(
                1,
                sent(message(&bare("alice"), "chat", "three"), &bb).with_child(delay()),
            ),
            del(OFFLINE_TABLE, &offline_key("alice", 1)),
            del(OFFLINE_TABLE, &offline_key("alice", 2)),
            del(OFFLINE_TABLE, &offline_key("alice", 3)),
        ],
    );
    assert!(store.is_empty(), "{store:?}");
}

#[test]
fn offline_storage_limit_bounces() {
    let mut config = HubConfig::new(DOMAIN);
    config.max_offline_per_user = 1;
    let mut h = H::with_config(config);
    h.online(9, "bob", "b");
    h.send(9, message(&bare("alice"), "chat", "1"));
    let out = h.send(9, message(&bare("alice"), "chat", "2"));
    let m = sent(message(&bare("alice"), "chat", "2"), &full("bob", "b"));
    let mut reply = error_reply(&m, "cancel", "service-unavailable");
    if let Some(e) = reply.child_mut("error", ns::CLIENT) {
        e.push_child(Element::new("text", ns::STANZAS).with_text("offline storage is full"));
    }
    check(&out, vec![d(9, reply)]);
}

#[test]
fn requeue_unacked_reroutes_messages_and_answers_iqs() {
    let mut h = H::new();
    h.online(9, "bob", "b");
    h.online(1, "alice", "a");
    h.online(2, "alice", "b");
    let (aa, ab, bb) = (full("alice", "a"), full("alice", "b"), full("bob", "b"));
    let to_a = sent(message(&aa, "chat", "lost?"), &bb);
    let query = sent(
        iq("get", "q1", Some(&aa), Some(Element::new("query", "urn:x"))),
        &bb,
    );
    let carbon = Element::new("message", ns::CLIENT)
        .with_attr("from", bare("alice"))
        .with_attr("to", aa.clone())
        .with_child(Element::new("received", ns::CARBONS));
    let pres = with_addr(presence(), &bb, &aa);
    let unacked = vec![to_a.clone(), query.clone(), carbon, pres];

    h.unbind(1);
    let mut out = Vec::new();
    let jid = jid::FullJid::new(&aa).expect("jid");
    h.hub
        .requeue_unacked(&jid, unacked.clone(), &accounts, NOW, &mut out);
    check(
        &out,
        vec![
            d(2, to_a.clone()),
            d(9, error_reply(&query, "cancel", "service-unavailable")),
        ],
    );

    // With no resource left the message is stored.
    h.unbind(2);
    let mut out = Vec::new();
    let jid = jid::FullJid::new(&ab).expect("jid");
    h.hub
        .requeue_unacked(&jid, vec![to_a], &accounts, NOW, &mut out);
    check(&out, vec![put(OFFLINE_TABLE, &offline_key("alice", 1))]);
}
