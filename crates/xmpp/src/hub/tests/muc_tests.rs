//! Multi-User Chat (XEP-0045) and self-ping (XEP-0410): the room state
//! machine, checked through the stanzas each session receives.

use std::collections::BTreeMap;

use tributary_xmpp_xml::Element;

use super::super::muc::ROOM_TABLE;
use super::*;

pub(super) const ROOM: &str = "room@conference.localhost";

pub(super) fn cfg() -> HubConfig {
    let mut c = HubConfig::new(DOMAIN);
    c.mam_max_messages = 100;
    c
}

/// alice (1), bob (2), carol (3) and dave (4) online.
pub(super) fn four() -> H {
    let mut h = H::with_config(cfg());
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h.online(3, "carol", "c");
    h.online(4, "dave", "d");
    h
}

pub(super) fn occ(nick: &str) -> String {
    format!("{ROOM}/{nick}")
}

/// A join presence, with optional children of the MUC `<x/>`.
pub(super) fn join(nick: &str, x_children: Vec<Element>) -> Element {
    let mut x = Element::new("x", ns::MUC);
    for c in x_children {
        x.push_child(c);
    }
    presence_to(&occ(nick), "").with_child(x)
}

fn owner_query(child: Element) -> Element {
    iq(
        "set",
        "own",
        Some(ROOM),
        Some(Element::new("query", ns::MUC_OWNER).with_child(child)),
    )
}

/// A submitted room configuration form.
pub(super) fn config_form(fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    x.push_child(
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", "FORM_TYPE")
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::MUC_ROOMCONFIG)),
    );
    for (var, value) in fields {
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", format!("muc#roomconfig_{var}"))
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*value)),
        );
    }
    owner_query(x)
}

fn admin_set(item: Element) -> Element {
    iq(
        "set",
        "adm",
        Some(ROOM),
        Some(Element::new("query", ns::MUC_ADMIN).with_child(item)),
    )
}

fn admin_item(attrs: &[(&str, &str)]) -> Element {
    let mut it = Element::new("item", ns::MUC_ADMIN);
    for (k, v) in attrs {
        it.set_attr(k, *v);
    }
    it
}

/// The stanzas delivered to `session`, as sent (not normalized).
pub(super) fn got(out: &[Output], session: SessionId) -> Vec<Element> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { session: s, stanza } if *s == session => Some(stanza.clone()),
            _ => None,
        })
        .collect()
}

/// The status codes of a MUC presence or message.
pub(super) fn codes(e: &Element) -> Vec<String> {
    e.child("x", ns::MUC_USER)
        .map(|x| {
            x.elements()
                .filter(|s| s.name == "status")
                .filter_map(|s| s.attr("code").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `<item/>` of a MUC presence.
pub(super) fn muc_item(e: &Element) -> Element {
    e.child("x", ns::MUC_USER)
        .and_then(|x| x.child("item", ns::MUC_USER))
        .cloned()
        .expect("muc#user item")
}

/// The error condition of an error stanza.
pub(super) fn condition(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml());
    e.child("error", ns::CLIENT)
        .and_then(|err| err.elements().find(|c| c.ns == ns::STANZAS))
        .map(|c| c.name.clone())
        .expect("error condition")
}

/// alice creates the room as an instant room; bob joins as Bob.
pub(super) fn open_room(h: &mut H) {
    let out = h.send(1, join("Alice", vec![]));
    let mine = got(&out, 1);
    assert_eq!(codes(&mine[0]), ["110", "201"]);
    let out = h.send(
        1,
        owner_query(Element::new("x", ns::DATA_FORMS).with_attr("type", "submit")),
    );
    assert_eq!(got(&out, 1)[0].attr("type"), Some("result"));
    h.send(2, join("Bob", vec![]));
}

#[test]
fn creating_a_room_gives_an_owner_a_locked_room_and_an_empty_subject() {
    let mut h = four();
    let out = h.send(1, join("Alice", vec![]));
    let mine = got(&out, 1);
    assert_eq!(mine.len(), 2, "{out:?}");
    let p = &mine[0];
    assert_eq!(p.attr("from"), Some(occ("Alice").as_str()));
    assert_eq!(p.attr("to"), Some(full("alice", "a").as_str()));
    let it = muc_item(p);
    assert_eq!(it.attr("affiliation"), Some("owner"));
    assert_eq!(it.attr("role"), Some("moderator"));
    assert_eq!(it.attr("jid"), Some(full("alice", "a").as_str()));
    let subject = &mine[1];
    assert_eq!(subject.attr("type"), Some("groupchat"));
    assert_eq!(subject.attr("from"), Some(ROOM));
    assert_eq!(
        subject.child("subject", ns::CLIENT).map(|s| s.text()),
        Some(String::new())
    );
    // Locked until configured: nobody else gets in.
    let out = h.send(2, join("Bob", vec![]));
    assert_eq!(condition(&got(&out, 2)[0]), "item-not-found");
    // Temporary: gone when alice leaves.
    h.send(1, presence_to(&occ("Alice"), "unavailable"));
    assert!(h.hub.muc.rooms.is_empty());
}

#[test]
fn joining_shows_occupants_then_self_presence_with_110() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(3, join("Carol", vec![]));
    let carol = got(&out, 3);
    // Alice, Bob, self, subject.
    assert_eq!(carol.len(), 4, "{carol:?}");
    assert_eq!(carol[0].attr("from"), Some(occ("Alice").as_str()));
    // Semi-anonymous: a participant does not see real JIDs.
    assert_eq!(muc_item(&carol[0]).attr("jid"), None);
    assert_eq!(carol[1].attr("from"), Some(occ("Bob").as_str()));
    assert_eq!(codes(&carol[2]), ["110"]);
    assert_eq!(muc_item(&carol[2]).attr("role"), Some("participant"));
    assert_eq!(muc_item(&carol[2]).attr("affiliation"), Some("none"));
    assert!(carol[3].child("subject", ns::CLIENT).is_some());
    // The moderator sees carol's JID, bob does not.
    let to_alice = got(&out, 1);
    assert_eq!(
        muc_item(&to_alice[0]).attr("jid"),
        Some(full("carol", "c").as_str())
    );
    assert_eq!(muc_item(&got(&out, 2)[0]).attr("jid"), None);
}

#[test]
fn nickname_conflicts_and_bad_nicknames() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(3, join("Bob", vec![]));
    let err = &got(&out, 3)[0];
    assert_eq!(condition(err), "conflict");
    assert_eq!(err.attr("from"), Some(occ("Bob").as_str()));
    let long = "n".repeat(65);
    let out = h.send(3, join(&long, vec![]));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
    // No nickname at all.
    let out = h.send(
        3,
        presence_to(ROOM, "").with_child(Element::new("x", ns::MUC)),
    );
    assert_eq!(condition(&got(&out, 3)[0]), "jid-malformed");
}

#[test]
fn groupchat_is_reflected_to_everyone_and_kept_as_history() {
    let mut h = four();
    open_room(&mut h);
    for i in 0..3 {
        let out = h.send(2, message(ROOM, "groupchat", &format!("m{i}")));
        for s in [1, 2] {
            let m = &got(&out, s)[0];
            assert_eq!(m.attr("from"), Some(occ("Bob").as_str()));
            let sid = m.child("stanza-id", ns::SID).expect("stanza-id");
            assert_eq!(sid.attr("by"), Some(ROOM));
        }
    }
    // A late joiner asking for two messages gets them, stamped, before the subject.
    let hist = Element::new("history", ns::MUC).with_attr("maxstanzas", "2");
    let out = h.send(3, join("Carol", vec![hist]));
    let carol = got(&out, 3);
    let bodies: Vec<String> = carol
        .iter()
        .filter_map(|m| m.child("body", ns::CLIENT).map(|b| b.text()))
        .collect();
    assert_eq!(bodies, ["m1", "m2"]);
    let delay = carol[3].child("delay", ns::DELAY).expect("delay");
    assert_eq!(delay.attr("from"), Some(ROOM));
    assert_eq!(delay.attr("stamp"), Some(NOW_STAMP));
    assert!(
        carol
            .last()
            .is_some_and(|m| m.child("subject", ns::CLIENT).is_some())
    );
    // maxchars='0' is no history; since after the messages is none either.
    let out = h.send(
        4,
        join(
            "Dave",
            vec![Element::new("history", ns::MUC).with_attr("maxchars", "0")],
        ),
    );
    assert!(
        got(&out, 4)
            .iter()
            .all(|m| m.child("body", ns::CLIENT).is_none())
    );
}

#[test]
fn groupchat_needs_an_occupant_and_an_existing_room() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(3, message(ROOM, "groupchat", "hi"));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
    let out = h.send(3, message("nope@conference.localhost", "groupchat", "hi"));
    assert_eq!(condition(&got(&out, 3)[0]), "item-not-found");
    let disco = iq(
        "get",
        "d",
        Some("nope@conference.localhost"),
        Some(Element::new("query", ns::DISCO_INFO)),
    );
    let out = h.send(3, disco);
    assert_eq!(condition(&got(&out, 3)[0]), "item-not-found");
}

#[test]
fn subject_changes_are_broadcast_and_sent_on_join() {
    let mut h = four();
    open_room(&mut h);
    let subject = Element::new("message", ns::CLIENT)
        .with_attr("to", ROOM)
        .with_attr("type", "groupchat")
        .with_child(Element::new("subject", ns::CLIENT).with_text("Topic"));
    // A participant may not (changesubject is off).
    let out = h.send(2, subject.clone());
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
    let out = h.send(1, subject);
    assert_eq!(
        got(&out, 2)[0]
            .child("subject", ns::CLIENT)
            .map(|s| s.text()),
        Some("Topic".into())
    );
    let out = h.send(3, join("Carol", vec![]));
    let last = got(&out, 3).pop().expect("subject");
    assert_eq!(last.attr("from"), Some(occ("Alice").as_str()));
    assert_eq!(
        last.child("subject", ns::CLIENT).map(|s| s.text()),
        Some("Topic".into())
    );
}

#[test]
fn private_messages_go_between_occupants() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(2, message(&occ("Alice"), "chat", "psst"));
    let m = &got(&out, 1)[0];
    assert_eq!(m.attr("from"), Some(occ("Bob").as_str()));
    assert_eq!(m.attr("to"), Some(full("alice", "a").as_str()));
    assert!(m.child("x", ns::MUC_USER).is_some());
    let out = h.send(2, message(&occ("Nobody"), "chat", "psst"));
    assert_eq!(condition(&got(&out, 2)[0]), "item-not-found");
    let out = h.send(3, message(&occ("Alice"), "chat", "psst"));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
}

#[test]
fn kick_needs_a_moderator_and_tells_everyone() {
    let mut h = four();
    open_room(&mut h);
    h.send(3, join("Carol", vec![]));
    let out = h.send(
        2,
        admin_set(admin_item(&[("nick", "Carol"), ("role", "none")])),
    );
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
    let out = h.send(
        1,
        admin_set(admin_item(&[("nick", "Alice"), ("role", "none")])),
    );
    assert_eq!(condition(&got(&out, 1)[0]), "not-allowed");
    let out = h.send(
        1,
        admin_set(admin_item(&[("nick", "Carol"), ("role", "none")])),
    );
    let carol = got(&out, 3);
    assert_eq!(carol[0].attr("type"), Some("unavailable"));
    assert_eq!(codes(&carol[0]), ["110", "307"]);
    assert_eq!(muc_item(&carol[0]).attr("role"), Some("none"));
    assert_eq!(codes(&got(&out, 2)[0]), ["307"]);
    assert!(
        got(&out, 1)
            .iter()
            .any(|r| r.attr("type") == Some("result"))
    );
    // Gone from the room: a groupchat is refused.
    let out = h.send(3, message(ROOM, "groupchat", "back?"));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
}

#[test]
fn ban_removes_and_forbids_reentry() {
    let mut h = four();
    open_room(&mut h);
    h.send(3, join("Carol", vec![]));
    let ban = admin_item(&[("jid", &bare("carol")), ("affiliation", "outcast")])
        .with_child(Element::new("reason", ns::MUC_ADMIN).with_text("spam"));
    let out = h.send(1, admin_set(ban));
    let carol = &got(&out, 3)[0];
    assert_eq!(codes(carol), ["110", "301"]);
    assert_eq!(muc_item(carol).attr("affiliation"), Some("outcast"));
    let out = h.send(3, join("Carol", vec![]));
    assert_eq!(condition(&got(&out, 3)[0]), "forbidden");
    // The outcast list shows carol.
    let list = iq(
        "get",
        "l",
        Some(ROOM),
        Some(
            Element::new("query", ns::MUC_ADMIN)
                .with_child(admin_item(&[("affiliation", "outcast")])),
        ),
    );
    let out = h.send(1, list);
    let q = got(&out, 1)[0]
        .child("query", ns::MUC_ADMIN)
        .cloned()
        .expect("query");
    let jids: Vec<_> = q.elements().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, [bare("carol")]);
    // Only admins may ban.
    let out = h.send(
        2,
        admin_set(admin_item(&[
            ("jid", &bare("alice")),
            ("affiliation", "outcast"),
        ])),
    );
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
}

#[test]
fn moderated_rooms_silence_visitors_until_voice() {
    let mut h = four();
    open_room(&mut h);
    h.send(1, config_form(&[("moderatedroom", "1")]));
    let out = h.send(3, join("Carol", vec![]));
    assert_eq!(muc_item(&got(&out, 3)[2]).attr("role"), Some("visitor"));
    let out = h.send(3, message(ROOM, "groupchat", "hello?"));
    assert_eq!(condition(&got(&out, 3)[0]), "forbidden");
    let out = h.send(
        1,
        admin_set(admin_item(&[("nick", "Carol"), ("role", "participant")])),
    );
    assert_eq!(muc_item(&got(&out, 3)[0]).attr("role"), Some("participant"));
    let out = h.send(3, message(ROOM, "groupchat", "thanks"));
    assert_eq!(
        got(&out, 2)[0].child("body", ns::CLIENT).map(|b| b.text()),
        Some("thanks".into())
    );
    // And revoked again.
    h.send(
        1,
        admin_set(admin_item(&[("nick", "Carol"), ("role", "visitor")])),
    );
    let out = h.send(3, message(ROOM, "groupchat", "hm"));
    assert_eq!(condition(&got(&out, 3)[0]), "forbidden");
}

#[test]
fn password_and_members_only_rooms() {
    let mut h = four();
    open_room(&mut h);
    h.send(
        1,
        config_form(&[("passwordprotectedroom", "1"), ("roomsecret", "s3cret")]),
    );
    let out = h.send(3, join("Carol", vec![]));
    assert_eq!(condition(&got(&out, 3)[0]), "not-authorized");
    let wrong = Element::new("password", ns::MUC).with_text("nope");
    let out = h.send(3, join("Carol", vec![wrong]));
    assert_eq!(condition(&got(&out, 3)[0]), "not-authorized");
    let right = Element::new("password", ns::MUC).with_text("s3cret");
    let out = h.send(3, join("Carol", vec![right]));
    assert_eq!(codes(&got(&out, 3)[2]), ["110"]);

    h.send(
        1,
        config_form(&[("passwordprotectedroom", "0"), ("membersonly", "1")]),
    );
    let out = h.send(4, join("Dave", vec![]));
    assert_eq!(condition(&got(&out, 4)[0]), "registration-required");
    h.send(
        1,
        admin_set(admin_item(&[
            ("jid", &bare("dave")),
            ("affiliation", "member"),
        ])),
    );
    let out = h.send(4, join("Dave", vec![]));
    assert!(
        codes(
            &got(&out, 4)
                .into_iter()
                .find(|p| p.attr("from") == Some(occ("Dave").as_str()))
                .expect("self")
        )
        .contains(&"110".to_string())
    );
}

#[test]
fn a_full_room_refuses_newcomers() {
    let mut h = four();
    open_room(&mut h);
    h.send(1, config_form(&[("maxusers", "2")]));
    let out = h.send(3, join("Carol", vec![]));
    let err = &got(&out, 3)[0];
    assert_eq!(condition(err), "service-unavailable");
}

#[test]
fn the_config_form_round_trips() {
    let mut h = four();
    open_room(&mut h);
    h.send(
        1,
        config_form(&[
            ("roomname", "The Room"),
            ("whois", "anyone"),
            ("historylength", "5"),
        ]),
    );
    let get = iq(
        "get",
        "g",
        Some(ROOM),
        Some(Element::new("query", ns::MUC_OWNER)),
    );
    let out = h.send(1, get.clone());
    let x = got(&out, 1)[0]
        .child("query", ns::MUC_OWNER)
        .and_then(|q| q.child("x", ns::DATA_FORMS))
        .cloned()
        .expect("form");
    let value = |var: &str| {
        x.elements()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.child("value", ns::DATA_FORMS))
            .map(|v| v.text())
    };
    assert_eq!(
        value("muc#roomconfig_roomname").as_deref(),
        Some("The Room")
    );
    assert_eq!(value("muc#roomconfig_whois").as_deref(), Some("anyone"));
    assert_eq!(value("muc#roomconfig_historylength").as_deref(), Some("5"));
    // Only owners.
    let out = h.send(2, get);
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
    // Non-anonymous now: bob sees real JIDs.
    let out = h.send(3, join("Carol", vec![]));
    assert_eq!(
        muc_item(&got(&out, 2)[0]).attr("jid"),
        Some(full("carol", "c").as_str())
    );
    assert_eq!(codes(&got(&out, 3)[2]), ["100", "110"]);
    // disco#info shows the features.
    let out = h.send(
        2,
        iq(
            "get",
            "i",
            Some(ROOM),
            Some(Element::new("query", ns::DISCO_INFO)),
        ),
    );
    let q = got(&out, 2)[0]
        .child("query", ns::DISCO_INFO)
        .cloned()
        .expect("info");
    let features: Vec<_> = q.elements().filter_map(|f| f.attr("var")).collect();
    for f in [
        "muc_nonanonymous",
        "muc_temporary",
        "muc_open",
        "muc_unsecured",
        "muc_public",
        "muc_unmoderated",
        ns::MAM,
    ] {
        assert!(features.contains(&f), "{f} in {features:?}");
    }
}

#[test]
fn destroying_a_room_tells_the_occupants() {
    let mut h = four();
    open_room(&mut h);
    let destroy = Element::new("destroy", ns::MUC_OWNER)
        .with_child(Element::new("reason", ns::MUC_OWNER).with_text("bye"));
    let out = h.send(2, owner_query(destroy.clone()));
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
    let out = h.send(1, owner_query(destroy));
    let bob = &got(&out, 2)[0];
    assert_eq!(bob.attr("type"), Some("unavailable"));
    let d = bob
        .child("x", ns::MUC_USER)
        .and_then(|x| x.child("destroy", ns::MUC_USER))
        .expect("destroy");
    assert_eq!(
        d.child("reason", ns::MUC_USER).map(|r| r.text()),
        Some("bye".into())
    );
    assert!(h.hub.muc.rooms.is_empty());
    assert!(h.hub.muc.joined.is_empty());
}

#[test]
fn leaving_and_ending_a_session_remove_the_occupant() {
    let mut h = four();
    open_room(&mut h);
    h.send(3, join("Carol", vec![]));
    let out = h.send(3, presence_to(&occ("Carol"), "unavailable"));
    assert_eq!(codes(&got(&out, 3)[0]), ["110"]);
    assert_eq!(got(&out, 1)[0].attr("type"), Some("unavailable"));
    let out = h.unbind(2);
    let to_alice = got(&out, 1);
    assert!(
        to_alice
            .iter()
            .any(|p| p.attr("from") == Some(occ("Bob").as_str())
                && p.attr("type") == Some("unavailable"))
    );
    let r = h.hub.muc.rooms.values().next().expect("room");
    assert_eq!(r.occupants.len(), 1);
    // Broadcast unavailable presence leaves rooms too.
    h.send(1, presence().with_attr("type", "unavailable"));
    assert!(h.hub.muc.rooms.is_empty());
}

#[test]
fn nickname_change_sends_303() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(2, presence_to(&occ("Robert"), ""));
    let to_alice = got(&out, 1);
    assert_eq!(codes(&to_alice[0]), ["303"]);
    assert_eq!(muc_item(&to_alice[0]).attr("nick"), Some("Robert"));
    assert_eq!(to_alice[1].attr("from"), Some(occ("Robert").as_str()));
    let out = h.send(2, presence_to(&occ("Alice"), ""));
    assert_eq!(condition(&got(&out, 2)[0]), "conflict");
}

#[test]
fn self_ping_answers_joined_occupants_only() {
    let mut h = four();
    open_room(&mut h);
    let ping = |nick: &str| {
        iq(
            "get",
            "p",
            Some(&occ(nick)),
            Some(Element::new("ping", ns::PING)),
        )
    };
    let out = h.send(2, ping("Bob"));
    assert_eq!(got(&out, 2)[0].attr("type"), Some("result"));
    let out = h.send(3, ping("Carol"));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
    let out = h.send(
        3,
        iq(
            "get",
            "p",
            Some("gone@conference.localhost/x"),
            Some(Element::new("ping", ns::PING)),
        ),
    );
    assert_eq!(condition(&got(&out, 3)[0]), "item-not-found");
}

#[test]
fn service_disco_lists_public_rooms() {
    let mut h = four();
    open_room(&mut h);
    let out = h.send(
        3,
        iq(
            "get",
            "i",
            Some("conference.localhost"),
            Some(Element::new("query", ns::DISCO_INFO)),
        ),
    );
    let q = got(&out, 3)[0]
        .child("query", ns::DISCO_INFO)
        .cloned()
        .expect("info");
    assert!(q.elements().any(|f| f.attr("var") == Some(ns::MUC)));
    let out = h.send(
        3,
        iq(
            "get",
            "i",
            Some("conference.localhost"),
            Some(Element::new("query", ns::DISCO_ITEMS)),
        ),
    );
    let q = got(&out, 3)[0]
        .child("query", ns::DISCO_ITEMS)
        .cloned()
        .expect("items");
    let rooms: Vec<_> = q.elements().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(rooms, [ROOM]);
    // The server lists the service.
    let out = h.send(
        3,
        iq(
            "get",
            "s",
            Some(DOMAIN),
            Some(Element::new("query", ns::DISCO_ITEMS)),
        ),
    );
    let q = got(&out, 3)[0]
        .child("query", ns::DISCO_ITEMS)
        .cloned()
        .expect("items");
    assert!(
        q.elements()
            .any(|i| i.attr("jid") == Some("conference.localhost"))
    );
}

/// Restores a hub with the MUC/MAM configuration from a simulated store.
pub(super) fn restart_with(store: &BTreeMap<(&'static str, String), Vec<u8>>) -> H {
    let mut h = H::with_config(cfg());
    for table in Hub::TABLES {
        let rows = store
            .iter()
            .filter(|((t, _), _)| t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        h.hub.restore(table, rows).expect("restore");
    }
    h
}

#[test]
fn persistent_rooms_survive_a_restart_with_their_history() {
    let mut h = four();
    let mut store = BTreeMap::new();
    let out = h.send(1, join("Alice", vec![]));
    apply(&mut store, &out);
    let out = h.send(
        1,
        config_form(&[
            ("persistentroom", "1"),
            ("roomname", "Kept"),
            ("membersonly", "1"),
        ]),
    );
    assert!(shapes(&out).contains(&put(ROOM_TABLE, ROOM)));
    apply(&mut store, &out);
    let out = h.send(
        1,
        admin_set(admin_item(&[
            ("jid", &bare("bob")),
            ("affiliation", "member"),
        ])),
    );
    apply(&mut store, &out);
    let out = h.send(1, message(ROOM, "groupchat", "remember me"));
    apply(&mut store, &out);
    // Everyone leaves; the room stays.
    let out = h.unbind(1);
    apply(&mut store, &out);
    assert_eq!(h.hub.muc.rooms.len(), 1);

    let mut h = restart_with(&store);
    h.online(2, "bob", "b");
    h.online(3, "carol", "c");
    let out = h.send(3, join("Carol", vec![]));
    assert_eq!(condition(&got(&out, 3)[0]), "registration-required");
    let out = h.send(2, join("Bob", vec![]));
    let bob = got(&out, 2);
    assert!(
        bob.iter().any(
            |m| m.child("body", ns::CLIENT).map(|b| b.text()).as_deref() == Some("remember me")
        )
    );
    let r = h.hub.muc.rooms.values().next().expect("room");
    assert_eq!(r.config.name, "Kept");

    // Destroying it deletes the row and the archive.
    let out = h.send(2, owner_query(Element::new("destroy", ns::MUC_OWNER)));
    assert_eq!(condition(&got(&out, 2)[0]), "forbidden");
}
