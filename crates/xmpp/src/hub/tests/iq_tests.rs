//! IQ validation and routing, disco, version, ping, vcard-temp.

use tributary_xmpp_xml::Element;

use super::super::disco::SERVER_FEATURES;
use super::super::persist::VCARD_TABLE;
use super::*;

fn setup() -> H {
    let mut h = H::new();
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h
}

/// Sends `q` from alice/a and expects the error `condition` back.
#[track_caller]
fn expect_error(h: &mut H, q: Element, kind: &str, condition: &str) {
    let out = h.send(1, q.clone());
    let sent = q.with_attr("from", full("alice", "a"));
    check(&out, vec![d(1, error_reply(&sent, kind, condition))]);
}

#[test]
fn disco_info_of_the_server() {
    let mut h = setup();
    let aa = full("alice", "a");
    let mut info = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "server")
            .with_attr("type", "im")
            .with_attr("name", "Tributary"),
    );
    for f in SERVER_FEATURES {
        info.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    for to in [Some(DOMAIN), None] {
        let q = iq("get", "i1", to, Some(Element::new("query", ns::DISCO_INFO)));
        let out = h.send(1, q);
        check(&out, vec![d(1, result("i1", &aa, to, Some(info.clone())))]);
    }
    for f in [
        ns::PING,
        ns::VERSION,
        ns::BLOCKING,
        ns::CARBONS,
        ns::VCARD,
        "msgoffline",
        ns::ROSTER,
    ] {
        assert!(SERVER_FEATURES.contains(&f), "{f}");
    }
}

#[test]
fn disco_info_of_an_account_and_items() {
    let mut h = setup();
    let aa = full("alice", "a");
    let q = iq(
        "get",
        "i2",
        Some(&bare("bob")),
        Some(Element::new("query", ns::DISCO_INFO)),
    );
    let out = h.send(1, q);
    let info = Element::new("query", ns::DISCO_INFO)
        .with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "account")
                .with_attr("type", "registered"),
        )
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_ITEMS));
    let mut info = info;
    crate::hub::Hub::pep_disco_info(&mut info);
    check(
        &out,
        vec![d(1, result("i2", &aa, Some(&bare("bob")), Some(info)))],
    );

    let q = iq(
        "get",
        "i3",
        Some(DOMAIN),
        Some(Element::new("query", ns::DISCO_ITEMS)),
    );
    let out = h.send(1, q);
    let items = Element::new("query", ns::DISCO_ITEMS)
        .with_child(
            Element::new("item", ns::DISCO_ITEMS).with_attr("jid", format!("pubsub.{DOMAIN}")),
        )
        .with_child(
            Element::new("item", ns::DISCO_ITEMS).with_attr("jid", format!("conference.{DOMAIN}")),
        );
    check(
        &out,
        vec![d(1, result("i3", &aa, Some(DOMAIN), Some(items)))],
    );
}

#[test]
fn version_and_ping() {
    let mut h = setup();
    let aa = full("alice", "a");
    let out = h.send(
        1,
        iq(
            "get",
            "v",
            Some(DOMAIN),
            Some(Element::new("query", ns::VERSION)),
        ),
    );
    let version = Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("Tributary"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
    check(
        &out,
        vec![d(1, result("v", &aa, Some(DOMAIN), Some(version)))],
    );

    let out = h.send(
        1,
        iq(
            "get",
            "p",
            Some(DOMAIN),
            Some(Element::new("ping", ns::PING)),
        ),
    );
    check(&out, vec![d(1, result("p", &aa, Some(DOMAIN), None))]);
    let out = h.send(
        1,
        iq("get", "p2", None, Some(Element::new("ping", ns::PING))),
    );
    check(&out, vec![d(1, result("p2", &aa, None, None))]);
}

#[test]
fn unknown_payloads_are_service_unavailable() {
    let mut h = setup();
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some(DOMAIN),
            Some(Element::new("query", "urn:unknown")),
        ),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq("set", "u", None, Some(Element::new("query", "urn:unknown"))),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some(&bare("bob")),
            Some(Element::new("query", "urn:unknown")),
        ),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some(&bare("bob")),
            Some(Element::new("ping", ns::PING)),
        ),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some(&format!("{DOMAIN}/x")),
            Some(Element::new("ping", ns::PING)),
        ),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some(&bare("nobody")),
            Some(Element::new("query", ns::DISCO_INFO)),
        ),
        "cancel",
        "service-unavailable",
    );
    expect_error(
        &mut h,
        iq(
            "get",
            "u",
            Some("example.org"),
            Some(Element::new("ping", ns::PING)),
        ),
        "cancel",
        "remote-server-not-found",
    );
}

#[test]
fn malformed_iqs_are_bad_request() {
    let mut h = setup();
    let two = iq("get", "t", None, Some(Element::new("ping", ns::PING)))
        .with_child(Element::new("ping", ns::PING));
    expect_error(&mut h, two, "modify", "bad-request");
    expect_error(&mut h, iq("get", "t", None, None), "modify", "bad-request");
    let no_id = Element::new("iq", ns::CLIENT)
        .with_attr("type", "get")
        .with_child(Element::new("ping", ns::PING));
    expect_error(&mut h, no_id, "modify", "bad-request");
    expect_error(
        &mut h,
        iq("fetch", "t", None, Some(Element::new("ping", ns::PING))),
        "modify",
        "bad-request",
    );
    // Results and errors to the server are dropped.
    assert!(h.send(1, iq("result", "r", Some(DOMAIN), None)).is_empty());
    assert!(h.send(1, iq("error", "r", None, None)).is_empty());
}

#[test]
fn iq_routing_to_full_jids() {
    let mut h = setup();
    let (aa, bb) = (full("alice", "a"), full("bob", "b"));
    let q = iq(
        "get",
        "x",
        Some(&bb),
        Some(Element::new("query", "urn:custom")),
    );
    let out = h.send(1, q.clone());
    check(&out, vec![d(2, q.with_attr("from", aa.clone()))]);
    let r = iq("result", "x", Some(&aa), None);
    let out = h.send(2, r.clone());
    check(&out, vec![d(1, r.with_attr("from", bb))]);
    expect_error(
        &mut h,
        iq(
            "get",
            "y",
            Some(&full("bob", "gone")),
            Some(Element::new("query", "urn:custom")),
        ),
        "cancel",
        "service-unavailable",
    );
    assert!(
        h.send(1, iq("result", "y", Some(&full("bob", "gone")), None))
            .is_empty()
    );
}

#[test]
fn roster_of_someone_else_is_forbidden() {
    let mut h = setup();
    expect_error(
        &mut h,
        iq(
            "get",
            "r",
            Some(&bare("bob")),
            Some(Element::new("query", ns::ROSTER)),
        ),
        "auth",
        "forbidden",
    );
}

#[test]
fn vcard_set_get_limits_and_restart() {
    let mut h = setup();
    let mut store = BTreeMap::new();
    let aa = full("alice", "a");
    let empty = Element::new("vCard", ns::VCARD);
    let out = h.send(1, iq("get", "g", None, Some(empty.clone())));
    check(
        &out,
        vec![d(1, result("g", &aa, None, Some(empty.clone())))],
    );

    let card = Element::new("vCard", ns::VCARD)
        .with_child(Element::new("FN", ns::VCARD).with_text("Alice"));
    let out = h.send(1, iq("set", "s", None, Some(card.clone())));
    apply(&mut store, &out);
    check(
        &out,
        vec![
            put(VCARD_TABLE, &bare("alice")),
            d(1, result("s", &aa, None, None)),
        ],
    );

    // Own (no 'to' or own bare JID) and from someone else.
    let out = h.send(1, iq("get", "g", Some(&bare("alice")), Some(empty.clone())));
    check(
        &out,
        vec![d(
            1,
            result("g", &aa, Some(&bare("alice")), Some(card.clone())),
        )],
    );
    let out = h.send(2, iq("get", "g", Some(&bare("alice")), Some(empty.clone())));
    check(
        &out,
        vec![d(
            2,
            result(
                "g",
                &full("bob", "b"),
                Some(&bare("alice")),
                Some(card.clone()),
            ),
        )],
    );

    // Setting someone else's is forbidden; too large is not acceptable.
    let q = iq("set", "s", Some(&bare("bob")), Some(card.clone()));
    expect_error(&mut h, q, "auth", "forbidden");
    let huge = Element::new("vCard", ns::VCARD)
        .with_child(Element::new("PHOTO", ns::VCARD).with_text("A".repeat(70 * 1024)));
    let out = h.send(1, iq("set", "big", None, Some(huge.clone())));
    let sent = iq("set", "big", None, Some(huge)).with_attr("from", aa.clone());
    let mut reply = error_reply(&sent, "modify", "not-acceptable");
    if let Some(e) = reply.child_mut("error", ns::CLIENT) {
        e.push_child(Element::new("text", ns::STANZAS).with_text("vCard too large"));
    }
    check(&out, vec![d(1, reply)]);

    let mut h = restart(&store);
    h.bind(2, "bob", "b");
    let out = h.send(2, iq("get", "g", Some(&bare("alice")), Some(empty)));
    check(
        &out,
        vec![d(
            2,
            result("g", &full("bob", "b"), Some(&bare("alice")), Some(card)),
        )],
    );
}
