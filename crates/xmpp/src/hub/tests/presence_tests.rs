//! Presence broadcast, probes, directed presence, unavailable on unbind.

use tributary_xmpp_xml::Element;

use super::subscription_tests::friends;
use super::*;

#[test]
fn initial_presence_reaches_contacts_and_own_resources_and_gets_theirs() {
    let mut h = friends();
    let (aa, ac, bb) = (full("alice", "a"), full("alice", "c"), full("bob", "b"));
    h.bind(3, "alice", "c");
    let p = presence_prio(1);
    let out = h.send(3, p.clone());
    check(
        &out,
        vec![
            // Own resources, the sender included.
            d(1, with_addr(p.clone(), &ac, &aa)),
            d(3, with_addr(p.clone(), &ac, &ac)),
            // Contacts with 'from'/'both'.
            d(2, with_addr(p, &ac, &bb)),
            // The probe of bob, answered locally.
            d(3, with_addr(presence(), &bb, &ac)),
            // alice's other resource.
            d(3, with_addr(presence(), &aa, &ac)),
        ],
    );
}

#[test]
fn presence_update_goes_to_subscribers_only() {
    let mut h = friends();
    h.online(3, "carol", "c");
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let out = h.send(1, presence_prio(3));
    check(
        &out,
        vec![
            d(1, with_addr(presence_prio(3), &aa, &aa)),
            d(2, with_addr(presence_prio(3), &aa, &bb)),
        ],
    );
}

#[test]
fn bound_but_unavailable_resources_get_no_presence() {
    let mut h = friends();
    h.bind(3, "bob", "quiet");
    let out = h.send(1, presence());
    assert!(to_session(&out, 3).is_empty());
}

#[test]
fn unbind_broadcasts_unavailable_and_is_idempotent() {
    let mut h = friends();
    h.online(3, "alice", "c");
    let (aa, ac, bb) = (full("alice", "a"), full("alice", "c"), full("bob", "b"));
    let out = h.unbind(1);
    check(
        &out,
        vec![d(3, unavailable(&aa, &ac)), d(2, unavailable(&aa, &bb))],
    );
    assert!(h.unbind(1).is_empty());
    assert_eq!(h.hub.jid_of(1), None);
    // A session that never sent presence leaves silently.
    h.bind(4, "alice", "d");
    assert!(h.unbind(4).is_empty());
}

#[test]
fn explicit_unavailable_keeps_status_and_is_reflected() {
    let mut h = friends();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let gone = presence()
        .with_attr("type", "unavailable")
        .with_child(Element::new("status", ns::CLIENT).with_text("bye"));
    let out = h.send(1, gone.clone());
    check(
        &out,
        vec![
            d(1, with_addr(gone.clone(), &aa, &aa)),
            d(2, with_addr(gone, &aa, &bb)),
        ],
    );
    // Unavailable now: bob's updates no longer reach alice, and unbind is silent.
    let out = h.send(2, presence_prio(2));
    assert!(to_session(&out, 1).is_empty());
    assert!(h.unbind(1).is_empty());
}

#[test]
fn directed_presence_is_remembered_until_unavailable() {
    let mut h = friends();
    h.online(3, "carol", "c");
    let (aa, cc) = (full("alice", "a"), full("carol", "c"));
    let out = h.send(1, presence_to(&bare("carol"), ""));
    check(&out, vec![d(3, with_addr(presence(), &aa, &bare("carol")))]);
    // Ending the session tells carol too.
    let out = h.unbind(1);
    assert_eq!(
        to_session(&out, 3),
        vec![norm(&unavailable(&aa, &bare("carol")))]
    );

    // Directed unavailable cancels the directed presence.
    h.online(4, "alice", "d");
    let ad = full("alice", "d");
    h.send(4, presence_to(&cc, ""));
    let out = h.send(4, presence_to(&cc, "unavailable"));
    check(&out, vec![d(3, unavailable(&ad, &cc))]);
    let out = h.unbind(4);
    assert!(to_session(&out, 3).is_empty());
}

#[test]
fn directed_presence_to_unknown_or_remote() {
    let mut h = friends();
    assert!(h.send(1, presence_to(&bare("nobody"), "")).is_empty());
    let out = h.send(1, presence_to("x@example.org", ""));
    let sent = presence_to("x@example.org", "").with_attr("from", full("alice", "a"));
    check(
        &out,
        vec![d(
            1,
            error_reply(&sent, "cancel", "remote-server-not-found"),
        )],
    );
}

#[test]
fn client_probe_is_answered_only_for_subscriptions() {
    let mut h = friends();
    h.online(3, "carol", "c");
    let (aa, bb, cc) = (full("alice", "a"), full("bob", "b"), full("carol", "c"));
    let out = h.send(1, presence_to(&bare("bob"), "probe"));
    check(&out, vec![d(1, with_addr(presence(), &bb, &aa))]);
    let out = h.send(3, presence_to(&bare("alice"), "probe"));
    assert!(out.is_empty());
    let _ = cc;
}

#[test]
fn presence_errors_go_to_bound_full_jids_only() {
    let mut h = friends();
    let err = presence_to(&full("bob", "b"), "error");
    let out = h.send(1, err.clone());
    check(&out, vec![d(2, err.with_attr("from", full("alice", "a")))]);
    assert!(h.send(1, presence_to(&bare("bob"), "error")).is_empty());
    assert!(
        h.send(1, presence_to(&full("bob", "zz"), "error"))
            .is_empty()
    );
}

#[test]
fn unknown_presence_type_is_bad_request() {
    let mut h = friends();
    let bad = presence().with_attr("type", "dance");
    let out = h.send(1, bad.clone());
    let sent = bad.with_attr("from", full("alice", "a"));
    check(
        &out,
        vec![d(1, error_reply(&sent, "modify", "bad-request"))],
    );
}

#[test]
fn caps_and_other_extensions_are_forwarded_untouched() {
    let mut h = friends();
    let caps = Element::new("c", ns::CAPS)
        .with_attr("hash", "sha-1")
        .with_attr("node", "https://example.org")
        .with_attr("ver", "abc=");
    let p = presence().with_child(caps);
    let out = h.send(1, p.clone());
    assert_eq!(
        to_session(&out, 2),
        vec![norm(&with_addr(p, &full("alice", "a"), &full("bob", "b")))]
    );
}
