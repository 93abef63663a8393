//! The subscription state machine: handshake, RFC 6121 Appendix A, pre-approval.

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::super::persist::ROSTER_TABLE;
use super::super::roster::{Item, Sub};
use super::*;

fn bj(user: &str) -> BareJid {
    BareJid::new(&bare(user)).expect("jid")
}

/// Two users online with their rosters fetched: alice/a (1), bob/b (2).
fn alice_and_bob() -> H {
    let mut h = H::new();
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h
}

#[test]
fn handshake_ends_in_both_with_pushes_and_presence() {
    let mut h = alice_and_bob();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));

    // alice asks.
    let out = h.send(1, presence_to(&bare("bob"), "subscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "none", true))),
            put(ROSTER_TABLE, &bare("bob")),
            d(2, sub_stanza("alice", "bob", "subscribe")),
        ],
    );
    assert_eq!(h.state("alice", "bob"), (Sub::None, true, false, false));
    assert_eq!(h.state("bob", "alice"), (Sub::None, false, true, false));
    assert!(
        !h.has_item("bob", "alice"),
        "pending-in alone is no roster item"
    );

    // bob approves: both pushed, alice gets the approval and bob's presence.
    let out = h.send(2, presence_to(&bare("alice"), "subscribed"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "from", false))),
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "to", false))),
            d(1, sub_stanza("bob", "alice", "subscribed")),
            d(1, with_addr(presence(), &bb, &aa)),
        ],
    );

    // bob asks back.
    let out = h.send(2, presence_to(&bare("alice"), "subscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "from", true))),
            put(ROSTER_TABLE, &bare("alice")),
            d(1, sub_stanza("bob", "alice", "subscribe")),
        ],
    );

    // alice approves.
    let out = h.send(1, presence_to(&bare("bob"), "subscribed"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "both", false))),
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "both", false))),
            d(2, sub_stanza("alice", "bob", "subscribed")),
            d(2, with_addr(presence(), &aa, &bb)),
        ],
    );
    assert_eq!(h.state("alice", "bob"), (Sub::Both, false, false, false));
    assert_eq!(h.state("bob", "alice"), (Sub::Both, false, false, false));

    // From now on presence flows both ways.
    let away = presence().with_child(Element::new("show", ns::CLIENT).with_text("away"));
    let out = h.send(1, away.clone());
    check(
        &out,
        vec![
            d(1, with_addr(away.clone(), &aa, &aa)),
            d(2, with_addr(away, &aa, &bb)),
        ],
    );
    let out = h.unbind(2);
    check(&out, vec![d(1, unavailable(&bb, &aa))]);
}

/// (subscription, pending out, pending in), the states of RFC 6121 Appendix A.1.
type St = (Sub, bool, bool);

const NONE: St = (Sub::None, false, false);
const NONE_PO: St = (Sub::None, true, false);
const NONE_PI: St = (Sub::None, false, true);
const NONE_PO_PI: St = (Sub::None, true, true);
const TO: St = (Sub::To, false, false);
const TO_PI: St = (Sub::To, false, true);
const FROM: St = (Sub::From, false, false);
const FROM_PO: St = (Sub::From, true, false);
const BOTH: St = (Sub::Both, false, false);
const STATES: [St; 9] = [
    NONE, NONE_PO, NONE_PI, NONE_PO_PI, TO, TO_PI, FROM, FROM_PO, BOTH,
];

fn mirror(st: St) -> St {
    let sub = match st.0 {
        Sub::To => Sub::From,
        Sub::From => Sub::To,
        s => s,
    };
    (sub, st.2, st.1)
}

/// Sets alice's state towards bob (and bob's mirror image).
fn set_pair(h: &mut H, st: St) {
    for (owner, contact, (sub, ask, pi)) in [("alice", "bob", st), ("bob", "alice", mirror(st))] {
        let r = h.hub.rosters.entry(bj(owner)).or_default();
        r.items.remove(&bj(contact));
        r.pending.remove(&bj(contact));
        if sub != Sub::None || ask {
            r.items.insert(
                bj(contact),
                Item {
                    sub,
                    ask,
                    ..Item::default()
                },
            );
        }
        if pi {
            r.pending
                .insert(bj(contact), sub_stanza(contact, owner, "subscribe"));
        }
    }
}

fn state3(h: &H, owner: &str, contact: &str) -> St {
    let (s, a, p, _) = h.state(owner, contact);
    (s, a, p)
}

/// Runs every starting state through one stanza and checks the resulting
/// state of alice, and that bob's side stays the mirror image.
fn table(sender: &str, kind: &str, expected: [St; 9]) {
    for (start, want) in STATES.into_iter().zip(expected) {
        let mut h = H::new();
        h.bind(1, "alice", "a");
        h.bind(2, "bob", "b");
        set_pair(&mut h, start);
        let (session, to) = if sender == "alice" {
            (1, "bob")
        } else {
            (2, "alice")
        };
        h.send(session, presence_to(&bare(to), kind));
        let got = state3(&h, "alice", "bob");
        assert_eq!(
            got, want,
            "{sender} sends {kind} from alice state {start:?}"
        );
        assert_eq!(
            state3(&h, "bob", "alice"),
            mirror(got),
            "bob's view after {sender} sends {kind} from {start:?}"
        );
    }
}

#[test]
fn appendix_a_outbound_subscribe() {
    table(
        "alice",
        "subscribe",
        [
            NONE_PO, NONE_PO, NONE_PO_PI, NONE_PO_PI, TO, TO_PI, FROM_PO, FROM_PO, BOTH,
        ],
    );
}

#[test]
fn appendix_a_outbound_subscribed() {
    table(
        "alice",
        "subscribed",
        [NONE, NONE_PO, FROM, FROM_PO, TO, BOTH, FROM, FROM_PO, BOTH],
    );
}

#[test]
fn appendix_a_outbound_unsubscribe() {
    table(
        "alice",
        "unsubscribe",
        [
            NONE, NONE, NONE_PI, NONE_PI, NONE, NONE_PI, FROM, FROM, FROM,
        ],
    );
}

#[test]
fn appendix_a_outbound_unsubscribed() {
    table(
        "alice",
        "unsubscribed",
        [NONE, NONE_PO, NONE, NONE_PO, TO, TO, NONE, NONE_PO, TO],
    );
}

#[test]
fn appendix_a_inbound_subscribe() {
    table(
        "bob",
        "subscribe",
        [
            NONE_PI, NONE_PO_PI, NONE_PI, NONE_PO_PI, TO_PI, TO_PI, FROM, FROM_PO, BOTH,
        ],
    );
}

#[test]
fn appendix_a_inbound_subscribed() {
    table(
        "bob",
        "subscribed",
        [NONE, TO, NONE_PI, TO_PI, TO, TO_PI, FROM, BOTH, BOTH],
    );
}

#[test]
fn appendix_a_inbound_unsubscribe() {
    table(
        "bob",
        "unsubscribe",
        [NONE, NONE_PO, NONE, NONE_PO, TO, TO, NONE, NONE_PO, TO],
    );
}

#[test]
fn appendix_a_inbound_unsubscribed() {
    table(
        "bob",
        "unsubscribed",
        [
            NONE, NONE, NONE_PI, NONE_PI, NONE, NONE_PI, FROM, FROM, FROM,
        ],
    );
}

#[test]
fn outbound_subscribed_without_request_is_a_pre_approval() {
    let mut h = alice_and_bob();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    const { assert!(Hub::PRE_APPROVAL) };

    let out = h.send(2, presence_to(&bare("alice"), "subscribed"));
    let approved = item(&bare("alice"), "none", false).with_attr("approved", "true");
    check(
        &out,
        vec![put(ROSTER_TABLE, &bare("bob")), d(2, push(&bb, approved))],
    );
    assert_eq!(h.state("bob", "alice"), (Sub::None, false, false, true));

    // alice's request is approved at once; bob never sees it.
    let out = h.send(1, presence_to(&bare("bob"), "subscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "none", true))),
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "from", false))),
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "to", false))),
            d(1, sub_stanza("bob", "alice", "subscribed")),
            d(1, with_addr(presence(), &bb, &aa)),
        ],
    );
    assert_eq!(h.state("bob", "alice"), (Sub::From, false, false, false));
}

#[test]
fn unsubscribed_cancels_a_pre_approval() {
    let mut h = alice_and_bob();
    h.send(2, presence_to(&bare("alice"), "subscribed"));
    h.send(2, presence_to(&bare("alice"), "unsubscribed"));
    assert_eq!(h.state("bob", "alice"), (Sub::None, false, false, false));
    let out = h.send(1, presence_to(&bare("bob"), "subscribe"));
    assert_eq!(
        to_session(&out, 2),
        vec![norm(&sub_stanza("alice", "bob", "subscribe"))]
    );
}

#[test]
fn request_to_offline_user_is_stored_and_delivered_at_initial_presence() {
    let mut h = H::new();
    h.online(1, "alice", "a");
    let out = h.send(1, presence_to(&bare("bob"), "subscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(
                1,
                push(&full("alice", "a"), item(&bare("bob"), "none", true)),
            ),
            put(ROSTER_TABLE, &bare("bob")),
        ],
    );
    // Through a restart, too.
    let mut store = BTreeMap::new();
    apply(&mut store, &out);
    let mut h = restart(&store);
    h.bind(2, "bob", "b");
    let out = h.send(2, presence());
    let bb = full("bob", "b");
    check(
        &out,
        vec![
            d(2, with_addr(presence(), &bb, &bb)),
            d(2, sub_stanza("alice", "bob", "subscribe")),
        ],
    );
    // Redelivered at the next initial presence while unanswered.
    h.unbind(2);
    h.bind(3, "bob", "c");
    let out = h.send(3, presence());
    assert_eq!(
        to_session(&out, 3).last(),
        Some(&norm(&sub_stanza("alice", "bob", "subscribe")))
    );
}

#[test]
fn duplicate_request_is_not_redelivered() {
    let mut h = alice_and_bob();
    h.send(1, presence_to(&bare("bob"), "subscribe"));
    let out = h.send(1, presence_to(&bare("bob"), "subscribe"));
    check(&out, vec![]);
}

#[test]
fn subscribe_to_other_domain_is_remote_server_not_found() {
    let mut h = alice_and_bob();
    let out = h.send(1, presence_to("bob@example.org", "subscribe"));
    let sent = presence_to("bob@example.org", "subscribe").with_attr("from", full("alice", "a"));
    check(
        &out,
        vec![d(
            1,
            error_reply(&sent, "cancel", "remote-server-not-found"),
        )],
    );
}

#[test]
fn subscribe_to_unknown_local_user_only_updates_the_roster() {
    let mut h = alice_and_bob();
    let out = h.send(1, presence_to(&bare("nobody"), "subscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(
                1,
                push(&full("alice", "a"), item(&bare("nobody"), "none", true)),
            ),
        ],
    );
}

#[test]
fn subscription_stanza_to_a_full_jid_goes_to_the_bare_jid() {
    let mut h = alice_and_bob();
    let out = h.send(1, presence_to(&full("bob", "b"), "subscribe"));
    assert_eq!(
        to_session(&out, 2),
        vec![norm(&sub_stanza("alice", "bob", "subscribe"))]
    );
}

#[test]
fn subscribe_keeps_payload_like_nick_and_status() {
    let mut h = alice_and_bob();
    let nick = Element::new("nick", "http://jabber.org/protocol/nick").with_text("Al");
    let out = h.send(
        1,
        presence_to(&bare("bob"), "subscribe").with_child(nick.clone()),
    );
    assert_eq!(
        to_session(&out, 2),
        vec![norm(
            &sub_stanza("alice", "bob", "subscribe").with_child(nick)
        )]
    );
}

/// Both subscribed, both online.
pub(super) fn friends() -> H {
    let mut h = alice_and_bob();
    h.send(1, presence_to(&bare("bob"), "subscribe"));
    h.send(2, presence_to(&bare("alice"), "subscribed"));
    h.send(2, presence_to(&bare("alice"), "subscribe"));
    h.send(1, presence_to(&bare("bob"), "subscribed"));
    assert_eq!(h.state("alice", "bob"), (Sub::Both, false, false, false));
    h
}

#[test]
fn unsubscribe_sends_unavailable_to_the_unsubscriber() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let out = h.send(1, presence_to(&bare("bob"), "unsubscribe"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "from", false))),
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "to", false))),
            d(2, sub_stanza("alice", "bob", "unsubscribe")),
            d(1, unavailable(&bb, &aa)),
        ],
    );
}

#[test]
fn unsubscribed_revokes_and_sends_unavailable_to_the_contact() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let out = h.send(1, presence_to(&bare("bob"), "unsubscribed"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, push(&aa, item(&bare("bob"), "to", false))),
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "from", false))),
            d(2, sub_stanza("alice", "bob", "unsubscribed")),
            d(2, unavailable(&aa, &bb)),
        ],
    );
}

#[test]
fn roster_remove_cancels_both_directions() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let remove = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", bare("bob"))
            .with_attr("subscription", "remove"),
    );
    let out = h.send(1, iq("set", "rm", None, Some(remove)));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, result("rm", &aa, None, None)),
            d(1, push(&aa, item(&bare("bob"), "remove", false))),
            // bob loses 'to' ...
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "from", false))),
            d(2, sub_stanza("alice", "bob", "unsubscribed")),
            d(2, unavailable(&aa, &bb)),
            // ... and 'from'.
            put(ROSTER_TABLE, &bare("bob")),
            d(2, push(&bb, item(&bare("alice"), "none", false))),
            d(2, sub_stanza("alice", "bob", "unsubscribe")),
            d(1, unavailable(&bb, &aa)),
        ],
    );
    assert!(!h.has_item("alice", "bob"));
    assert_eq!(h.state("bob", "alice"), (Sub::None, false, false, false));
}

#[test]
fn roster_remove_denies_a_pending_request() {
    let mut h = alice_and_bob();
    // bob asks alice; alice adds bob to her roster, then removes him.
    h.send(2, presence_to(&bare("alice"), "subscribe"));
    let add = Element::new("query", ns::ROSTER)
        .with_child(Element::new("item", ns::ROSTER).with_attr("jid", bare("bob")));
    h.send(1, iq("set", "add", None, Some(add)));
    let remove = Element::new("query", ns::ROSTER).with_child(
        Element::new("item", ns::ROSTER)
            .with_attr("jid", bare("bob"))
            .with_attr("subscription", "remove"),
    );
    h.send(1, iq("set", "rm", None, Some(remove)));
    assert_eq!(h.state("bob", "alice"), (Sub::None, false, false, false));
    assert_eq!(h.state("alice", "bob"), (Sub::None, false, false, false));
}

#[test]
fn remove_account_cancels_contacts_subscriptions() {
    let mut h = friends();
    h.send(
        1,
        Element::new("message", ns::CLIENT)
            .with_attr("to", bare("carol"))
            .with_child(Element::new("body", ns::CLIENT).with_text("hi")),
    );
    let mut out = Vec::new();
    h.hub.remove_account("bob", &mut out);
    assert_eq!(h.state("alice", "bob"), (Sub::None, false, false, false));
    let shapes = shapes(&out);
    assert!(shapes.contains(&del(ROSTER_TABLE, &bare("bob"))));
    assert_eq!(shapes.last(), Some(&del(ROSTER_TABLE, &bare("bob"))));
    let mut out = Vec::new();
    h.hub.remove_account("carol", &mut out);
    check(
        &out,
        vec![del(
            super::super::persist::OFFLINE_TABLE,
            &format!("{}/{:020}", bare("carol"), 1),
        )],
    );
}
