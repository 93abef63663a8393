//! Message Archive Management (XEP-0313) with RSM paging (XEP-0059).

use std::collections::BTreeMap;

use tributary_xmpp_xml::Element;

use super::super::mam::{ARCHIVE_TABLE, PREFS_TABLE};
use super::muc_tests::{ROOM, condition, four, got, join, open_room, restart_with};
use super::*;

fn mam_query(to: Option<&str>, form: &[(&str, &str)], rsm: &[(&str, &str)]) -> Element {
    let mut q = Element::new("query", ns::MAM).with_attr("queryid", "q1");
    if !form.is_empty() {
        let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::MAM)),
        );
        for (var, value) in form {
            x.push_child(
                Element::new("field", ns::DATA_FORMS)
                    .with_attr("var", *var)
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(*value)),
            );
        }
        q.push_child(x);
    }
    if !rsm.is_empty() {
        let mut set = Element::new("set", ns::RSM);
        for (name, value) in rsm {
            set.push_child(Element::new(*name, ns::RSM).with_text(*value));
        }
        q.push_child(set);
    }
    iq("set", "mam", to, Some(q))
}

/// The bodies of the results, the `<fin/>` and its RSM values.
struct Answer {
    bodies: Vec<String>,
    ids: Vec<String>,
    complete: bool,
    first_index: Option<String>,
    count: Option<String>,
    first: Option<String>,
    last: Option<String>,
}

fn answer(out: &[Output], session: SessionId) -> Answer {
    let stanzas = got(out, session);
    let (fin_iq, results) = stanzas.split_last().expect("fin");
    assert_eq!(fin_iq.attr("type"), Some("result"), "{}", fin_iq.to_xml());
    let fin = fin_iq.child("fin", ns::MAM).expect("fin");
    let set = fin.child("set", ns::RSM).expect("set");
    let mut a = Answer {
        bodies: Vec::new(),
        ids: Vec::new(),
        complete: fin.attr("complete") == Some("true"),
        first_index: set
            .child("first", ns::RSM)
            .and_then(|f| f.attr("index"))
            .map(str::to_string),
        count: set.child("count", ns::RSM).map(|c| c.text()),
        first: set.child("first", ns::RSM).map(|f| f.text()),
        last: set.child("last", ns::RSM).map(|f| f.text()),
    };
    for m in results {
        let r = m.child("result", ns::MAM).expect("result");
        assert_eq!(r.attr("queryid"), Some("q1"));
        a.ids.push(r.attr("id").expect("id").to_string());
        let fwd = r.child("forwarded", ns::FORWARD).expect("forwarded");
        assert!(fwd.child("delay", ns::DELAY).is_some());
        let inner = fwd.child("message", ns::CLIENT).expect("message");
        a.bodies.push(
            inner
                .child("body", ns::CLIENT)
                .map(|b| b.text())
                .unwrap_or_default(),
        );
    }
    a
}

/// alice and bob exchange `n` messages: "m0" from alice, "m1" from bob...
fn chat(h: &mut H, n: usize) -> Vec<Output> {
    let mut all = Vec::new();
    for i in 0..n {
        let (from, to) = if i % 2 == 0 { (1, "bob") } else { (2, "alice") };
        all.extend(h.send(from, message(&bare(to), "chat", &format!("m{i}"))));
    }
    all
}

#[test]
fn both_sides_archive_and_the_recipient_sees_the_stanza_id() {
    let mut h = four();
    let out = h.send(1, message(&bare("bob"), "chat", "hello"));
    let puts: Vec<_> = shapes(&out)
        .into_iter()
        .filter(|s| matches!(s, Shape::Put(ARCHIVE_TABLE, _)))
        .collect();
    assert_eq!(puts.len(), 2, "{out:?}");
    let delivered = &got(&out, 2)[0];
    let sid = delivered.child("stanza-id", ns::SID).expect("stanza-id");
    assert_eq!(sid.attr("by"), Some(bare("bob").as_str()));
    let out = h.send(2, mam_query(None, &[], &[]));
    let a = answer(&out, 2);
    assert_eq!(a.bodies, ["hello"]);
    assert_eq!(a.ids, [sid.attr("id").expect("id").to_string()]);
    assert!(a.complete);
    // A forged stanza-id from the sender is removed.
    let forged = message(&bare("bob"), "chat", "x").with_child(
        Element::new("stanza-id", ns::SID)
            .with_attr("by", bare("bob"))
            .with_attr("id", "fake"),
    );
    let out = h.send(1, forged);
    let ids: Vec<_> = got(&out, 2)[0]
        .elements()
        .filter(|e| e.is("stanza-id", ns::SID))
        .map(|e| e.attr("id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0], "fake");
}

#[test]
fn paging_forward_and_the_last_page() {
    let mut h = four();
    chat(&mut h, 27);
    let out = h.send(1, mam_query(Some(&bare("alice")), &[], &[("max", "10")]));
    let p1 = answer(&out, 1);
    assert_eq!(
        p1.bodies,
        (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert!(!p1.complete);
    assert_eq!(p1.first_index.as_deref(), Some("0"));
    assert_eq!(p1.count.as_deref(), Some("27"));
    assert_eq!(p1.first.as_deref(), Some(p1.ids[0].as_str()));

    let last = p1.last.expect("last");
    let out = h.send(1, mam_query(None, &[], &[("max", "10"), ("after", &last)]));
    let p2 = answer(&out, 1);
    assert_eq!(
        p2.bodies,
        (10..20).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(p2.first_index.as_deref(), Some("10"));

    let out = h.send(1, mam_query(None, &[], &[("max", "10"), ("before", "")]));
    let tail = answer(&out, 1);
    assert_eq!(
        tail.bodies,
        (17..27).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(tail.first_index.as_deref(), Some("17"));
    assert!(!tail.complete);
    // Backwards from there to the start.
    let first = tail.first.expect("first");
    let out = h.send(
        1,
        mam_query(None, &[], &[("max", "20"), ("before", &first)]),
    );
    let head = answer(&out, 1);
    assert_eq!(head.bodies.len(), 17);
    assert!(head.complete);
    // The last page forwards is complete.
    let out = h.send(
        1,
        mam_query(
            None,
            &[],
            &[("max", "10"), ("after", &p2.last.expect("last"))],
        ),
    );
    let p3 = answer(&out, 1);
    assert_eq!(p3.bodies.len(), 7);
    assert!(p3.complete);
    // max 0: just the count.
    let out = h.send(1, mam_query(None, &[], &[("max", "0")]));
    let c = answer(&out, 1);
    assert!(c.bodies.is_empty());
    assert_eq!(c.count.as_deref(), Some("27"));
    // An unknown id.
    let out = h.send(1, mam_query(None, &[], &[("after", "12345")]));
    assert_eq!(condition(&got(&out, 1)[0]), "item-not-found");
}

#[test]
fn form_filters() {
    let mut h = four();
    chat(&mut h, 4);
    h.send(1, message(&bare("carol"), "chat", "to carol"));
    let out = h.send(1, mam_query(None, &[("with", &bare("carol"))], &[]));
    assert_eq!(answer(&out, 1).bodies, ["to carol"]);
    let out = h.send(
        1,
        mam_query(None, &[("start", "2030-01-01T00:00:00Z")], &[]),
    );
    assert!(answer(&out, 1).bodies.is_empty());
    let out = h.send(1, mam_query(None, &[("end", NOW_STAMP)], &[]));
    assert_eq!(answer(&out, 1).bodies.len(), 5);
    let out = h.send(1, mam_query(None, &[("start", "yesterday")], &[]));
    assert_eq!(condition(&got(&out, 1)[0]), "bad-request");
    let out = h.send(1, mam_query(None, &[], &[]));
    let ids = answer(&out, 1).ids;
    let out = h.send(
        1,
        mam_query(None, &[("after-id", &ids[1]), ("before-id", &ids[4])], &[]),
    );
    assert_eq!(answer(&out, 1).bodies, ["m2", "m3"]);
    // Someone else's archive is not reachable.
    let out = h.send(1, mam_query(Some(&bare("bob")), &[], &[]));
    assert_eq!(condition(&got(&out, 1)[0]), "service-unavailable");
}

#[test]
fn preferences_and_the_cap() {
    let mut h = four();
    let prefs = Element::new("prefs", ns::MAM)
        .with_attr("default", "always")
        .with_child(
            Element::new("never", ns::MAM)
                .with_child(Element::new("jid", ns::MAM).with_text(bare("carol"))),
        );
    let out = h.send(1, iq("set", "p", None, Some(prefs)));
    assert!(shapes(&out).contains(&put(PREFS_TABLE, &bare("alice"))));
    h.send(1, message(&bare("carol"), "chat", "secret"));
    h.send(1, message(&bare("bob"), "chat", "kept"));
    let out = h.send(1, mam_query(None, &[], &[]));
    assert_eq!(answer(&out, 1).bodies, ["kept"]);
    let out = h.send(
        1,
        iq("get", "p", None, Some(Element::new("prefs", ns::MAM))),
    );
    let p = got(&out, 1)[0]
        .child("prefs", ns::MAM)
        .cloned()
        .expect("prefs");
    assert_eq!(p.attr("default"), Some("always"));

    let mut config = super::muc_tests::cfg();
    config.mam_max_messages = 3;
    let mut h = H::with_config(config);
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    let out = chat(&mut h, 5);
    assert!(
        shapes(&out)
            .iter()
            .any(|s| matches!(s, Shape::Delete(ARCHIVE_TABLE, _)))
    );
    let out = h.send(1, mam_query(None, &[], &[]));
    assert_eq!(answer(&out, 1).bodies, ["m2", "m3", "m4"]);
}

#[test]
fn archives_survive_a_restart() {
    let mut h = four();
    let mut store = BTreeMap::new();
    let out = chat(&mut h, 3);
    apply(&mut store, &out);
    let out = h.send(1, mam_query(None, &[], &[]));
    let before = answer(&out, 1).ids;
    let mut h = restart_with(&store);
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    let out = h.send(1, mam_query(None, &[], &[]));
    let a = answer(&out, 1);
    assert_eq!(a.ids, before);
    assert_eq!(a.bodies, ["m0", "m1", "m2"]);
    // New ids keep growing.
    h.send(2, message(&bare("alice"), "chat", "later"));
    let out = h.send(1, mam_query(None, &[], &[]));
    let ids = answer(&out, 1).ids;
    let n: Vec<u64> = ids.iter().map(|i| i.parse().expect("number")).collect();
    assert!(n.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn room_archives_are_queried_at_the_room() {
    let mut h = four();
    open_room(&mut h);
    for i in 0..3 {
        h.send(2, message(ROOM, "groupchat", &format!("g{i}")));
    }
    let out = h.send(
        1,
        mam_query(Some(ROOM), &[], &[("max", "2"), ("before", "")]),
    );
    let a = answer(&out, 1);
    assert_eq!(a.bodies, ["g1", "g2"]);
    let results = got(&out, 1);
    assert_eq!(results[0].attr("from"), Some(ROOM));
    let inner = results[0]
        .child("result", ns::MAM)
        .and_then(|r| r.child("forwarded", ns::FORWARD))
        .and_then(|f| f.child("message", ns::CLIENT))
        .cloned()
        .expect("message");
    assert_eq!(inner.attr("from"), Some(format!("{ROOM}/Bob").as_str()));
    // Banned users may not read it; members-only rooms keep outsiders out.
    h.send(
        1,
        iq(
            "set",
            "b",
            Some(ROOM),
            Some(
                Element::new("query", ns::MUC_ADMIN).with_child(
                    Element::new("item", ns::MUC_ADMIN)
                        .with_attr("jid", bare("dave"))
                        .with_attr("affiliation", "outcast"),
                ),
            ),
        ),
    );
    let out = h.send(4, mam_query(Some(ROOM), &[], &[]));
    assert_eq!(condition(&got(&out, 4)[0]), "forbidden");
    // Carol (not in the room) may read a public room's archive.
    let out = h.send(3, mam_query(Some(ROOM), &[], &[]));
    assert_eq!(answer(&out, 3).bodies.len(), 3);
    let _ = join;
}

#[test]
fn deleting_an_account_deletes_its_archive() {
    let mut h = four();
    chat(&mut h, 2);
    let mut out = Vec::new();
    h.hub.remove_account("alice", &mut out);
    let deleted = shapes(&out)
        .into_iter()
        .filter(|s| matches!(s, Shape::Delete(ARCHIVE_TABLE, k) if k.starts_with("alice@")))
        .count();
    assert_eq!(deleted, 2);
    // Bob keeps his side.
    let out = h.send(2, mam_query(None, &[], &[]));
    assert_eq!(answer(&out, 2).bodies, ["m0", "m1"]);
}
