//! jabber:iq:roster get/set, versioning, pushes, errors.

use tributary_xmpp_xml::Element;

use super::super::persist::ROSTER_TABLE;
use super::*;

fn query() -> Element {
    Element::new("query", ns::ROSTER)
}

fn set_item(jid: &str, name: Option<&str>, groups: &[&str]) -> Element {
    let mut item = Element::new("item", ns::ROSTER).with_attr("jid", jid);
    if let Some(n) = name {
        item.set_attr("name", n);
    }
    for g in groups {
        item.push_child(Element::new("group", ns::ROSTER).with_text(*g));
    }
    iq("set", "s1", None, Some(query().with_child(item)))
}

#[track_caller]
fn expect_error(h: &mut H, q: Element, kind: &str, condition: &str) {
    let out = h.send(1, q.clone());
    let sent = q.with_attr("from", full("alice", "a"));
    check(&out, vec![d(1, error_reply(&sent, kind, condition))]);
}

#[test]
fn get_set_and_pushes_to_interested_resources_only() {
    let mut h = H::new();
    h.bind(1, "alice", "a");
    h.bind(2, "alice", "b"); // never asks for the roster
    let aa = full("alice", "a");
    let out = h.send(1, roster_get("g1"));
    check(&out, vec![d(1, result("g1", &aa, None, Some(query())))]);

    let out = h.send(1, set_item(&bare("bob"), Some("Bob"), &["Friends", "Work"]));
    let mut pushed = item(&bare("bob"), "none", false).with_attr("name", "Bob");
    pushed.push_child(Element::new("group", ns::ROSTER).with_text("Friends"));
    pushed.push_child(Element::new("group", ns::ROSTER).with_text("Work"));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, result("s1", &aa, None, None)),
            d(1, push(&aa, pushed.clone())),
        ],
    );

    let out = h.send(1, roster_get("g2"));
    check(
        &out,
        vec![d(
            1,
            result("g2", &aa, None, Some(query().with_child(pushed))),
        )],
    );

    // Update: the name goes away, groups are replaced.
    let out = h.send(1, set_item(&bare("bob"), None, &[]));
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, result("s1", &aa, None, None)),
            d(1, push(&aa, item(&bare("bob"), "none", false))),
        ],
    );
}

#[test]
fn versioning() {
    let mut h = H::new();
    h.bind(1, "alice", "a");
    let aa = full("alice", "a");
    let versioned = |ver: &str| iq("get", "v", None, Some(query().with_attr("ver", ver)));

    let out = h.send(1, versioned(""));
    check(
        &out,
        vec![d(
            1,
            result("v", &aa, None, Some(query().with_attr("ver", "0"))),
        )],
    );
    // Up to date: empty result.
    let out = h.send(1, versioned("0"));
    check(&out, vec![d(1, result("v", &aa, None, None))]);

    // A change bumps the version; pushes carry it.
    let mut store = BTreeMap::new();
    let out = h.send(1, set_item(&bare("bob"), None, &[]));
    apply(&mut store, &out);
    let bob = item(&bare("bob"), "none", false);
    check(
        &out,
        vec![
            put(ROSTER_TABLE, &bare("alice")),
            d(1, result("s1", &aa, None, None)),
            d(
                1,
                iq(
                    "set",
                    "push",
                    Some(&aa),
                    Some(query().with_attr("ver", "1").with_child(bob.clone())),
                ),
            ),
        ],
    );
    let out = h.send(1, versioned("0"));
    check(
        &out,
        vec![d(
            1,
            result(
                "v",
                &aa,
                None,
                Some(query().with_attr("ver", "1").with_child(bob)),
            ),
        )],
    );
    let out = h.send(1, versioned("1"));
    check(&out, vec![d(1, result("v", &aa, None, None))]);

    // The version survives a restart.
    let mut h3 = restart(&store);
    h3.bind(1, "alice", "a");
    let out = h3.send(1, versioned("1"));
    check(&out, vec![d(1, result("v", &aa, None, None))]);
}

#[test]
fn roster_get_addressed_to_own_bare_jid() {
    let mut h = H::new();
    h.bind(1, "alice", "a");
    let out = h.send(1, iq("get", "o", Some(&bare("alice")), Some(query())));
    check(
        &out,
        vec![d(
            1,
            result(
                "o",
                &full("alice", "a"),
                Some(&bare("alice")),
                Some(query()),
            ),
        )],
    );
}

#[test]
fn set_errors() {
    let mut h = H::new();
    h.bind(1, "alice", "a");
    let two = iq(
        "set",
        "e",
        None,
        Some(
            query()
                .with_child(Element::new("item", ns::ROSTER).with_attr("jid", bare("bob")))
                .with_child(Element::new("item", ns::ROSTER).with_attr("jid", bare("carol"))),
        ),
    );
    expect_error(&mut h, two, "modify", "bad-request");
    expect_error(
        &mut h,
        iq("set", "e", None, Some(query())),
        "modify",
        "bad-request",
    );
    let own = set_item(&bare("alice"), None, &[]);
    let out = h.send(1, own.clone());
    let sent = own.with_attr("from", full("alice", "a"));
    let mut reply = error_reply(&sent, "cancel", "not-allowed");
    if let Some(e) = reply.child_mut("error", ns::CLIENT) {
        e.push_child(Element::new("text", ns::STANZAS).with_text("cannot add yourself"));
    }
    check(&out, vec![d(1, reply)]);
    let remove = iq(
        "set",
        "e",
        None,
        Some(
            query().with_child(
                Element::new("item", ns::ROSTER)
                    .with_attr("jid", bare("bob"))
                    .with_attr("subscription", "remove"),
            ),
        ),
    );
    expect_error(&mut h, remove, "cancel", "item-not-found");
    let out = h.send(1, set_item(&bare("bob"), None, &["g", "g"]));
    assert_eq!(to_session(&out, 1).len(), 1);
    assert_eq!(to_session(&out, 1)[0].attr("type"), Some("error"));
    let out = h.send(1, set_item(&full("bob", "x"), None, &[]));
    assert_eq!(to_session(&out, 1)[0].attr("type"), Some("error"));
    let out = h.send(1, set_item(&bare("bob"), None, &[""]));
    let err = to_session(&out, 1)[0].child("error", ns::CLIENT).cloned();
    assert!(err.is_some_and(|e| e.child("not-acceptable", ns::STANZAS).is_some()));
}
