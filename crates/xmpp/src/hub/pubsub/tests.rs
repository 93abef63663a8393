//! Tests of the node machine, the forms, capabilities and the service as
//! the hub runs it (component and PEP, `+notify` filtering, persistence).

use std::collections::BTreeMap;

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::caps::verification_string;
use super::form;
use super::node::{Item, MAX_ITEMS_CAP, Node, NodeConfig, UnsubscribeError};
use crate::hub::Output;
use crate::hub::tests::{H, apply, bare, full, iq, presence, presence_to, restart};
use crate::ns;

const SVC: &str = "pubsub.localhost";

fn item(id: &str, seq: u64) -> Item {
    Item {
        id: id.into(),
        payload: Some(Element::new("entry", "urn:test").with_text(id)),
        publisher: "alice@localhost".into(),
        seq,
    }
}

fn node(max: u32) -> Node {
    let mut config = NodeConfig::service_default();
    config.max_items = max;
    Node::new(BareJid::new("alice@localhost").expect("jid"), config)
}

// ---- the node machine ------------------------------------------------------

#[test]
fn publish_replaces_same_id_and_trims_oldest() {
    let mut n = node(2);
    assert!(n.publish(item("a", 1)).is_empty());
    assert!(n.publish(item("b", 2)).is_empty());
    // Same id: replaced and moved to the end, nothing dropped.
    assert!(n.publish(item("a", 3)).is_empty());
    let ids: Vec<&str> = n.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    let dropped = n.publish(item("c", 4));
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].id, "b");
    assert_eq!(n.last().map(|i| i.id.as_str()), Some("c"));
}

#[test]
fn select_by_id_and_newest() {
    let mut n = node(10);
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        n.publish(item(id, i as u64));
    }
    let ids = |v: Vec<&Item>| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(n.select(&[], None)), ["a", "b", "c"]);
    assert_eq!(ids(n.select(&[], Some(2))), ["b", "c"]);
    assert_eq!(
        ids(n.select(&["c".into(), "x".into(), "a".into()], None)),
        ["c", "a"]
    );
    assert!(n.retract("b").is_some());
    assert!(n.retract("b").is_none());
    assert_eq!(n.purge().len(), 2);
    assert!(n.items.is_empty());
}

#[test]
fn subscriptions_are_idempotent_and_unsubscribe_checks_subid() {
    let mut n = node(10);
    let (s1, new1) = n.subscribe("bob@localhost", "s1".into());
    let (s2, new2) = n.subscribe("bob@localhost", "s2".into());
    assert!(new1 && !new2);
    assert_eq!(s1, s2);
    assert_eq!(
        n.unsubscribe("carol@localhost", None),
        Err(UnsubscribeError::NotSubscribed)
    );
    assert_eq!(
        n.unsubscribe("bob@localhost", Some("nope")),
        Err(UnsubscribeError::InvalidSubid)
    );
    assert!(n.unsubscribe("bob@localhost", Some("s1")).is_ok());
    assert!(n.subscriptions.is_empty());
}

#[test]
fn lowering_max_items_drops_the_oldest() {
    let mut n = node(10);
    for i in 0..5 {
        n.publish(item(&i.to_string(), i));
    }
    let mut c = n.config.clone();
    c.max_items = 2;
    assert_eq!(n.configure(c).len(), 3);
    assert_eq!(n.items.len(), 2);
}

// ---- forms -----------------------------------------------------------------

fn submit(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    let mut all = vec![("FORM_TYPE", form_type)];
    all.extend_from_slice(fields);
    for (var, value) in all {
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(value)),
        );
    }
    x
}

#[test]
fn config_form_applies_and_refuses_bad_values() {
    let base = NodeConfig::service_default();
    let x = submit(
        form::NODE_CONFIG,
        &[
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
            ("pubsub#title", "News"),
            ("pubsub#unknown", "ignored"),
        ],
    );
    let fields = form::parse_submit(&x, form::NODE_CONFIG).expect("form");
    let c = form::apply(&base, &fields).expect("apply");
    assert_eq!(c.access_model.as_str(), "whitelist");
    assert_eq!(c.max_items, MAX_ITEMS_CAP);
    assert_eq!(c.title, "News");
    let bad = submit(form::NODE_CONFIG, &[("pubsub#max_items", "0")]);
    let fields = form::parse_submit(&bad, form::NODE_CONFIG).expect("form");
    assert_eq!(
        form::apply(&base, &fields),
        Err(form::FormError::BadValue("pubsub#max_items".into()))
    );
    assert!(form::parse_submit(&x, form::PUBLISH_OPTIONS).is_err());
}

#[test]
fn publish_options_are_preconditions() {
    let c = NodeConfig::pep_default();
    let same = form::parse_submit(
        &submit(
            form::PUBLISH_OPTIONS,
            &[("pubsub#access_model", "presence")],
        ),
        form::PUBLISH_OPTIONS,
    )
    .expect("form");
    assert!(form::preconditions_met(&c, &same));
    let other = form::parse_submit(
        &submit(
            form::PUBLISH_OPTIONS,
            &[("pubsub#access_model", "whitelist")],
        ),
        form::PUBLISH_OPTIONS,
    )
    .expect("form");
    assert!(!form::preconditions_met(&c, &other));
}

// ---- capabilities ----------------------------------------------------------

#[test]
fn caps_verification_string_matches_xep_0115_example() {
    // XEP-0115 §5.2.
    let mut q = Element::new("query", ns::DISCO_INFO).with_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", "client")
            .with_attr("type", "pc")
            .with_attr("name", "Exodus 0.9.1"),
    );
    for f in [
        "http://jabber.org/protocol/caps",
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "http://jabber.org/protocol/muc",
    ] {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    let s = verification_string(&q).expect("string");
    assert_eq!(
        s,
        "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
    );
    use base64::Engine;
    use sha1::Digest;
    let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
    assert_eq!(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

// ---- the service through the hub ------------------------------------------

fn ps(child: Element) -> Element {
    Element::new("pubsub", ns::PUBSUB).with_child(child)
}

fn owner(child: Element) -> Element {
    Element::new("pubsub", ns::PUBSUB_OWNER).with_child(child)
}

fn publish_el(node: &str, id: &str, payload: Element) -> Element {
    Element::new("publish", ns::PUBSUB)
        .with_attr("node", node)
        .with_child(
            Element::new("item", ns::PUBSUB)
                .with_attr("id", id)
                .with_child(payload),
        )
}

/// The stanzas delivered to `session`.
fn delivered(out: &[Output], session: u64) -> Vec<Element> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { session: s, stanza } if *s == session => Some(stanza.clone()),
            _ => None,
        })
        .collect()
}

/// The single reply to `session`: its type and (for errors) the condition
/// and the pubsub#errors condition.
fn reply(out: &[Output], session: u64) -> (String, Option<String>, Option<String>) {
    let iqs: Vec<Element> = delivered(out, session)
        .into_iter()
        .filter(|e| e.name == "iq")
        .collect();
    assert_eq!(iqs.len(), 1, "{out:#?}");
    let iq = &iqs[0];
    let err = iq.child("error", ns::CLIENT);
    let cond = err.and_then(|e| {
        e.elements()
            .find(|c| c.ns == ns::STANZAS)
            .map(|c| c.name.clone())
    });
    let app = err.and_then(|e| {
        e.elements()
            .find(|c| c.ns == ns::PUBSUB_ERRORS)
            .map(|c| c.name.clone())
    });
    (iq.attr("type").unwrap_or("").to_string(), cond, app)
}

fn ok(out: &[Output], session: u64) {
    let r = reply(out, session);
    assert_eq!(r.0, "result", "{out:#?}");
}

fn err(out: &[Output], session: u64, cond: &str, app: Option<&str>) {
    let r = reply(out, session);
    assert_eq!(
        r,
        ("error".into(), Some(cond.into()), app.map(String::from)),
        "{out:#?}"
    );
}

/// Event notifications delivered to `session`, as (node, first child name).
fn events(out: &[Output], session: u64) -> Vec<(String, String)> {
    delivered(out, session)
        .into_iter()
        .filter(|m| m.name == "message")
        .filter_map(|m| {
            let ev = m.child("event", ns::PUBSUB_EVENT)?;
            let c = ev.elements().next()?;
            let inner = c
                .elements()
                .next()
                .map(|i| i.name.clone())
                .unwrap_or_default();
            Some((
                c.attr("node").unwrap_or("").to_string(),
                format!("{}/{}", c.name, inner),
            ))
        })
        .collect()
}

fn three() -> H {
    let mut h = H::new();
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h.online(3, "carol", "c");
    h
}

#[test]
fn node_lifecycle_with_two_subscribers() {
    let mut h = three();
    let create = iq(
        "set",
        "c1",
        Some(SVC),
        Some(ps(
            Element::new("create", ns::PUBSUB).with_attr("node", "news")
        )),
    );
    let out = h.send(1, create.clone());
    ok(&out, 1);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Put {
            table: "xmpp_pubsub_node",
            ..
        }
    )));
    err(&h.send(1, create), 1, "conflict", None);
    for s in [2u64, 3] {
        let user = if s == 2 { "bob" } else { "carol" };
        let sub = Element::new("subscribe", ns::PUBSUB)
            .with_attr("node", "news")
            .with_attr("jid", bare(user));
        ok(&h.send(s, iq("set", "s", Some(SVC), Some(ps(sub)))), s);
    }
    let out = h.send(
        1,
        iq(
            "set",
            "p1",
            Some(SVC),
            Some(ps(publish_el(
                "news",
                "i1",
                Element::new("entry", "urn:test"),
            ))),
        ),
    );
    ok(&out, 1);
    assert_eq!(events(&out, 2), [("news".into(), "items/item".into())]);
    assert_eq!(events(&out, 3), [("news".into(), "items/item".into())]);
    assert!(events(&out, 1).is_empty());

    // Retrieval by a subscriber.
    let get = Element::new("items", ns::PUBSUB).with_attr("node", "news");
    let out = h.send(2, iq("get", "g", Some(SVC), Some(ps(get))));
    let items = &delivered(&out, 2)[0];
    let got = items
        .child("pubsub", ns::PUBSUB)
        .and_then(|p| p.child("items", ns::PUBSUB))
        .map(|i| i.elements().count());
    assert_eq!(got, Some(1));

    // Retract: notified.
    let retract = Element::new("retract", ns::PUBSUB)
        .with_attr("node", "news")
        .with_child(Element::new("item", ns::PUBSUB).with_attr("id", "i1"));
    let out = h.send(1, iq("set", "r", Some(SVC), Some(ps(retract))));
    ok(&out, 1);
    assert_eq!(events(&out, 2), [("news".into(), "items/retract".into())]);

    // Only the owner deletes; subscribers are told.
    let delete = owner(Element::new("delete", ns::PUBSUB_OWNER).with_attr("node", "news"));
    err(
        &h.send(2, iq("set", "d", Some(SVC), Some(delete.clone()))),
        2,
        "forbidden",
        None,
    );
    let out = h.send(1, iq("set", "d", Some(SVC), Some(delete)));
    ok(&out, 1);
    assert_eq!(events(&out, 2), [("news".into(), "delete/".into())]);
    assert_eq!(events(&out, 3), [("news".into(), "delete/".into())]);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Delete {
            table: "xmpp_pubsub_node",
            ..
        }
    )));
}

#[test]
fn bad_input_gets_the_xep_errors() {
    let mut h = three();
    // Unknown node.
    let get = Element::new("items", ns::PUBSUB).with_attr("node", "nope");
    err(
        &h.send(2, iq("get", "g", Some(SVC), Some(ps(get)))),
        2,
        "item-not-found",
        None,
    );
    // No node on publish.
    let publish = Element::new("publish", ns::PUBSUB)
        .with_child(Element::new("item", ns::PUBSUB).with_child(Element::new("x", "urn:test")));
    err(
        &h.send(1, iq("set", "p", Some(SVC), Some(ps(publish)))),
        1,
        "bad-request",
        Some("nodeid-required"),
    );
    // Whitelist node: others are refused.
    let mut cfg = Element::new("configure", ns::PUBSUB);
    cfg.push_child(submit(
        form::NODE_CONFIG,
        &[("pubsub#access_model", "whitelist")],
    ));
    let create = Element::new("pubsub", ns::PUBSUB)
        .with_child(Element::new("create", ns::PUBSUB).with_attr("node", "secret"))
        .with_child(cfg);
    ok(&h.send(1, iq("set", "c", Some(SVC), Some(create))), 1);
    let sub = Element::new("subscribe", ns::PUBSUB)
        .with_attr("node", "secret")
        .with_attr("jid", bare("bob"));
    err(
        &h.send(2, iq("set", "s", Some(SVC), Some(ps(sub)))),
        2,
        "not-allowed",
        Some("closed-node"),
    );
    // Someone else's JID.
    let sub = Element::new("subscribe", ns::PUBSUB)
        .with_attr("node", "secret")
        .with_attr("jid", bare("carol"));
    err(
        &h.send(2, iq("set", "s", Some(SVC), Some(ps(sub)))),
        2,
        "bad-request",
        Some("invalid-jid"),
    );
    // Publishing is for publishers.
    let p = ps(publish_el("secret", "x", Element::new("x", "urn:test")));
    err(
        &h.send(2, iq("set", "p", Some(SVC), Some(p))),
        2,
        "forbidden",
        None,
    );
    // Oversized item.
    let big = Element::new("blob", "urn:test").with_text("x".repeat(super::MAX_ITEM_BYTES + 1));
    let p = ps(publish_el("secret", "big", big));
    err(
        &h.send(1, iq("set", "p", Some(SVC), Some(p))),
        1,
        "not-acceptable",
        Some("payload-too-big"),
    );
    // Whitelisting bob lets him in.
    let aff = owner(
        Element::new("affiliations", ns::PUBSUB_OWNER)
            .with_attr("node", "secret")
            .with_child(
                Element::new("affiliation", ns::PUBSUB_OWNER)
                    .with_attr("jid", bare("bob"))
                    .with_attr("affiliation", "member"),
            ),
    );
    ok(&h.send(1, iq("set", "a", Some(SVC), Some(aff))), 1);
    let get = Element::new("items", ns::PUBSUB).with_attr("node", "secret");
    ok(&h.send(2, iq("get", "g", Some(SVC), Some(ps(get)))), 2);
}

#[test]
fn instant_node_and_items_survive_a_restart() {
    let mut store = BTreeMap::new();
    let mut h = three();
    let out = h.send(
        1,
        iq(
            "set",
            "c",
            Some(SVC),
            Some(ps(Element::new("create", ns::PUBSUB))),
        ),
    );
    ok(&out, 1);
    apply(&mut store, &out);
    let name = delivered(&out, 1)[0]
        .child("pubsub", ns::PUBSUB)
        .and_then(|p| p.child("create", ns::PUBSUB))
        .and_then(|c| c.attr("node"))
        .expect("instant node name")
        .to_string();
    for i in 0..3 {
        let p = ps(publish_el(
            &name,
            &format!("i{i}"),
            Element::new("n", "urn:test").with_text(i.to_string()),
        ));
        let out = h.send(1, iq("set", "p", Some(SVC), Some(p)));
        ok(&out, 1);
        apply(&mut store, &out);
    }
    let mut h = restart(&store);
    h.online(2, "bob", "b");
    let get = Element::new("items", ns::PUBSUB)
        .with_attr("node", name.as_str())
        .with_attr("max_items", "2");
    let out = h.send(2, iq("get", "g", Some(SVC), Some(ps(get))));
    let ids: Vec<String> = delivered(&out, 2)[0]
        .child("pubsub", ns::PUBSUB)
        .and_then(|p| p.child("items", ns::PUBSUB))
        .map(|i| {
            i.elements()
                .filter_map(|e| e.attr("id").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids, ["i1", "i2"]);
}

// ---- PEP -------------------------------------------------------------------

fn befriend(h: &mut H, s1: u64, u1: &str, s2: u64, u2: &str) {
    h.send(s1, presence_to(&bare(u2), "subscribe"));
    h.send(s2, presence_to(&bare(u1), "subscribed"));
    h.send(s2, presence_to(&bare(u1), "subscribe"));
    h.send(s1, presence_to(&bare(u2), "subscribed"));
}

/// Sends presence with caps `ver` from `session`, answers the hub's
/// disco#info query with `features`; returns the outputs of the answer.
fn caps(h: &mut H, session: u64, jid: &str, ver: &str, features: &[&str]) -> Vec<Output> {
    let c = Element::new("c", ns::CAPS)
        .with_attr("node", "urn:test")
        .with_attr("ver", ver)
        .with_attr("hash", "sha-1");
    let out = h.send(session, presence().with_child(c));
    let query = delivered(&out, session)
        .into_iter()
        .find(|e| e.name == "iq" && e.child("query", ns::DISCO_INFO).is_some())
        .expect("a caps query");
    assert_eq!(
        query
            .child("query", ns::DISCO_INFO)
            .and_then(|q| q.attr("node")),
        Some(format!("urn:test#{ver}").as_str())
    );
    let mut q = Element::new("query", ns::DISCO_INFO);
    for f in features {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    let answer = iq(
        "result",
        query.attr("id").unwrap_or(""),
        query.attr("from"),
        Some(q),
    );
    let _ = jid;
    h.send(session, answer)
}

const AVATAR: &str = "urn:xmpp:avatar:metadata";

#[test]
fn pep_notifies_only_resources_with_plus_notify() {
    let mut h = three();
    befriend(&mut h, 1, "alice", 2, "bob");
    befriend(&mut h, 1, "alice", 3, "carol");
    caps(
        &mut h,
        2,
        &full("bob", "b"),
        "v-bob",
        &["urn:xmpp:avatar:metadata+notify"],
    );
    caps(
        &mut h,
        3,
        &full("carol", "c"),
        "v-carol",
        &["http://jabber.org/protocol/nick+notify"],
    );
    let meta = Element::new("metadata", AVATAR);
    let out = h.send(
        1,
        iq("set", "p", None, Some(ps(publish_el(AVATAR, "h1", meta)))),
    );
    ok(&out, 1);
    assert_eq!(
        events(&out, 2),
        [(AVATAR.to_string(), "items/item".to_string())]
    );
    assert!(events(&out, 3).is_empty(), "{out:#?}");
    // Auto-created with PEP defaults: presence access, stored.
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Put {
            table: "xmpp_pubsub_node",
            ..
        }
    )));
    // A non-contact cannot read it (presence access model).
    let mut h2 = h;
    h2.online(4, "dave", "d");
    let get = Element::new("items", ns::PUBSUB).with_attr("node", AVATAR);
    err(
        &h2.send(
            4,
            iq("get", "g", Some(&bare("alice")), Some(ps(get.clone()))),
        ),
        4,
        "not-authorized",
        Some("presence-subscription-required"),
    );
    ok(
        &h2.send(2, iq("get", "g", Some(&bare("alice")), Some(ps(get)))),
        2,
    );
}

#[test]
fn last_item_sent_when_caps_are_resolved() {
    let mut h = three();
    befriend(&mut h, 1, "alice", 2, "bob");
    let nick = Element::new("nick", "http://jabber.org/protocol/nick").with_text("Al");
    ok(
        &h.send(
            1,
            iq(
                "set",
                "p",
                None,
                Some(ps(publish_el(
                    "http://jabber.org/protocol/nick",
                    "current",
                    nick,
                ))),
            ),
        ),
        1,
    );
    let out = caps(
        &mut h,
        2,
        &full("bob", "b"),
        "v1",
        &["http://jabber.org/protocol/nick+notify"],
    );
    assert_eq!(
        events(&out, 2),
        [(
            "http://jabber.org/protocol/nick".to_string(),
            "items/item".to_string()
        )]
    );
}

#[test]
fn bookmarks_publish_options_and_whitelist() {
    let mut h = three();
    befriend(&mut h, 1, "alice", 2, "bob");
    const BM: &str = "urn:xmpp:bookmarks:1";
    let opts = submit(
        form::PUBLISH_OPTIONS,
        &[
            ("pubsub#persist_items", "true"),
            ("pubsub#access_model", "whitelist"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
        ],
    );
    let publish = |id: &str, opts: Element| {
        Element::new("pubsub", ns::PUBSUB)
            .with_child(publish_el(
                BM,
                id,
                Element::new("conference", BM).with_attr("name", id),
            ))
            .with_child(Element::new("publish-options", ns::PUBSUB).with_child(opts))
    };
    ok(
        &h.send(
            1,
            iq("set", "p1", None, Some(publish("room1@muc", opts.clone()))),
        ),
        1,
    );
    ok(
        &h.send(1, iq("set", "p2", None, Some(publish("room2@muc", opts)))),
        1,
    );
    // Both kept (max_items=max).
    let get = Element::new("items", ns::PUBSUB).with_attr("node", BM);
    let out = h.send(1, iq("get", "g", None, Some(ps(get.clone()))));
    let n = delivered(&out, 1)[0]
        .child("pubsub", ns::PUBSUB)
        .and_then(|p| p.child("items", ns::PUBSUB))
        .map(|i| i.elements().count());
    assert_eq!(n, Some(2));
    // A contact may not read them.
    err(
        &h.send(2, iq("get", "g", Some(&bare("alice")), Some(ps(get)))),
        2,
        "not-allowed",
        Some("closed-node"),
    );
    // Conflicting options: precondition-not-met.
    let open = submit(form::PUBLISH_OPTIONS, &[("pubsub#access_model", "open")]);
    err(
        &h.send(1, iq("set", "p3", None, Some(publish("room3@muc", open)))),
        1,
        "conflict",
        Some("precondition-not-met"),
    );
    // Nobody else publishes to alice's PEP.
    let p = publish("x", submit(form::PUBLISH_OPTIONS, &[]));
    err(
        &h.send(2, iq("set", "p4", Some(&bare("alice")), Some(p))),
        2,
        "forbidden",
        None,
    );
}

#[test]
fn disco_lists_the_service_and_pep_identity() {
    let mut h = three();
    let out = h.send(
        1,
        iq(
            "get",
            "d",
            Some("localhost"),
            Some(Element::new("query", ns::DISCO_ITEMS)),
        ),
    );
    let items: Vec<String> = delivered(&out, 1)[0]
        .child("query", ns::DISCO_ITEMS)
        .map(|q| {
            q.elements()
                .filter_map(|i| i.attr("jid").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(items.contains(&SVC.to_string()), "{items:?}");
    let out = h.send(
        1,
        iq(
            "get",
            "i",
            Some(SVC),
            Some(Element::new("query", ns::DISCO_INFO)),
        ),
    );
    let q = delivered(&out, 1)[0].clone();
    let q = q.child("query", ns::DISCO_INFO).expect("query");
    assert!(
        q.elements()
            .any(|f| f.attr("var") == Some("http://jabber.org/protocol/pubsub#publish-options"))
    );
    let out = h.send(
        1,
        iq(
            "get",
            "i",
            Some(&bare("alice")),
            Some(Element::new("query", ns::DISCO_INFO)),
        ),
    );
    let q = delivered(&out, 1)[0].clone();
    let q = q.child("query", ns::DISCO_INFO).expect("query");
    assert!(
        q.elements()
            .any(|i| i.attr("category") == Some("pubsub") && i.attr("type") == Some("pep"))
    );
}

#[test]
fn verified_caps_are_cached_for_the_next_resource() {
    use base64::Engine;
    use sha1::Digest;
    let mut h = three();
    befriend(&mut h, 1, "alice", 2, "bob");
    const NICK: &str = "http://jabber.org/protocol/nick";
    let nick = Element::new("nick", NICK).with_text("Al");
    ok(
        &h.send(
            1,
            iq(
                "set",
                "p",
                None,
                Some(ps(publish_el(NICK, "current", nick))),
            ),
        ),
        1,
    );
    let feature = format!("{NICK}+notify");
    let q = Element::new("query", ns::DISCO_INFO)
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", feature.as_str()));
    let s = verification_string(&q).expect("string");
    let ver = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()));
    let out = caps(&mut h, 2, &full("bob", "b"), &ver, &[&feature]);
    assert_eq!(
        events(&out, 2),
        [(NICK.to_string(), "items/item".to_string())]
    );
    // Another resource announcing the same verified ver: no query, the item at once.
    h.bind(4, "bob", "b2");
    let c = Element::new("c", ns::CAPS)
        .with_attr("node", "urn:test")
        .with_attr("ver", ver.as_str())
        .with_attr("hash", "sha-1");
    let out = h.send(4, presence().with_child(c));
    assert!(
        !delivered(&out, 4)
            .iter()
            .any(|e| e.name == "iq" && e.child("query", ns::DISCO_INFO).is_some()),
        "{out:#?}"
    );
    assert_eq!(
        events(&out, 4),
        [(NICK.to_string(), "items/item".to_string())]
    );
}

#[test]
fn default_configuration_of_leaf_nodes_only() {
    let mut h = three();
    // No type and `leaf` are the leaf defaults (XEP-0060 §8.3, 1.27).
    for default in [
        Element::new("default", ns::PUBSUB_OWNER),
        Element::new("default", ns::PUBSUB_OWNER).with_attr("type", "leaf"),
    ] {
        let out = h.send(1, iq("get", "d", Some(SVC), Some(owner(default))));
        ok(&out, 1);
        let form = delivered(&out, 1)[0]
            .child("pubsub", ns::PUBSUB_OWNER)
            .and_then(|p| p.child("default", ns::PUBSUB_OWNER))
            .and_then(|d| d.child("x", ns::DATA_FORMS))
            .cloned();
        assert!(form.is_some(), "{out:#?}");
    }
    // Collections are XEP-0248's, which we do not have.
    let collection = Element::new("default", ns::PUBSUB_OWNER).with_attr("type", "collection");
    err(
        &h.send(1, iq("get", "d", Some(SVC), Some(owner(collection)))),
        1,
        "feature-not-implemented",
        Some("unsupported"),
    );
}
