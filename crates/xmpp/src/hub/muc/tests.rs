//! Mediated invitations and declines (XEP-0045 §7.8.2, §9.3) and voice
//! requests (§7.13, §8.6), checked through the stanzas each session gets.

use std::collections::BTreeMap;

use tributary_xmpp_xml::Element;

use crate::hub::tests::{H, apply, iq, presence_to, restart};
use crate::hub::{HubConfig, Output, SessionId};
use crate::ns;

const ROOM: &str = "room@conference.localhost";

/// alice (1), bob (2), carol (3) and dave (4) online.
fn four() -> H {
    let mut h = H::with_config(HubConfig::new("localhost"));
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h.online(3, "carol", "c");
    h.online(4, "dave", "d");
    h
}

fn join(nick: &str) -> Element {
    presence_to(&format!("{ROOM}/{nick}"), "").with_child(Element::new("x", ns::MUC))
}

/// A submitted form of `form_type` with `fields`.
fn submitted(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    for (var, value) in [("FORM_TYPE", form_type)].iter().chain(fields) {
        x.push_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", *var)
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(*value)),
        );
    }
    x
}

/// alice creates ROOM with the room configuration `fields` (`muc#roomconfig_` + name).
fn create(h: &mut H, fields: &[(&str, &str)]) {
    h.send(1, join("Alice"));
    let fields: Vec<(String, &str)> = fields
        .iter()
        .map(|(k, v)| (format!("muc#roomconfig_{k}"), *v))
        .collect();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let form = submitted(ns::MUC_ROOMCONFIG, &fields);
    let q = Element::new("query", ns::MUC_OWNER).with_child(form);
    let out = h.send(1, iq("set", "cfg", Some(ROOM), Some(q)));
    assert_eq!(got(&out, 1)[0].attr("type"), Some("result"), "{out:#?}");
}

fn got(out: &[Output], session: SessionId) -> Vec<Element> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { session: s, stanza } if *s == session => Some(stanza.clone()),
            _ => None,
        })
        .collect()
}

fn condition(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml());
    e.child("error", ns::CLIENT)
        .and_then(|err| err.elements().find(|c| c.ns == ns::STANZAS))
        .map(|c| c.name.clone())
        .expect("error condition")
}

/// A message to the room with a `muc#user` `<x/>` holding `child`.
fn to_room(id: &str, child: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", ROOM)
        .with_attr("id", id)
        .with_child(Element::new("x", ns::MUC_USER).with_child(child))
}

fn invite(to: &str, reason: Option<&str>) -> Element {
    let mut i = Element::new("invite", ns::MUC_USER).with_attr("to", to);
    if let Some(r) = reason {
        i.push_child(Element::new("reason", ns::MUC_USER).with_text(r));
    }
    i
}

fn decline(to: Option<&str>, reason: &str) -> Element {
    let mut d = Element::new("decline", ns::MUC_USER)
        .with_child(Element::new("reason", ns::MUC_USER).with_text(reason));
    if let Some(to) = to {
        d.set_attr("to", to);
    }
    d
}

/// The `muc#user` child `name` of a message from the room.
fn user_child(m: &Element, name: &str) -> Element {
    assert_eq!(m.attr("from"), Some(ROOM), "{}", m.to_xml());
    m.child("x", ns::MUC_USER)
        .and_then(|x| x.child(name, ns::MUC_USER))
        .cloned()
        .unwrap_or_else(|| panic!("no <{name}/> in {}", m.to_xml()))
}

fn affiliation_of(h: &mut H, session: SessionId, jid: &str) -> Option<String> {
    let q = Element::new("query", ns::MUC_ADMIN)
        .with_child(Element::new("item", ns::MUC_ADMIN).with_attr("affiliation", "member"));
    let out = h.send(session, iq("get", "list", Some(ROOM), Some(q)));
    let res = got(&out, session).remove(0);
    res.child("query", ns::MUC_ADMIN)
        .expect("member list")
        .elements()
        .find(|i| i.attr("jid") == Some(jid))
        .and_then(|i| i.attr("affiliation").map(str::to_string))
}

#[test]
fn an_invitation_goes_through_the_room_with_the_password_and_a_decline_comes_back() {
    let mut h = four();
    create(
        &mut h,
        &[("passwordprotectedroom", "1"), ("roomsecret", "pw")],
    );
    let out = h.send(1, to_room("inv1", invite("bob@localhost", Some("come in"))));
    let m = got(&out, 2);
    assert_eq!(m.len(), 1, "{out:#?}");
    assert_eq!(m[0].attr("to"), Some("bob@localhost"));
    assert_eq!(m[0].attr("id"), Some("inv1"));
    let inv = user_child(&m[0], "invite");
    assert_eq!(inv.attr("from"), Some("alice@localhost"));
    assert_eq!(
        inv.child("reason", ns::MUC_USER).map(|r| r.text()),
        Some("come in".into())
    );
    let password = m[0]
        .child("x", ns::MUC_USER)
        .and_then(|x| x.child("password", ns::MUC_USER))
        .map(|p| p.text());
    assert_eq!(password.as_deref(), Some("pw"));
    // Nothing for anyone else; an open room adds nobody to the member list (§9.3).
    assert!(
        got(&out, 1).is_empty() && got(&out, 3).is_empty(),
        "{out:#?}"
    );
    assert_eq!(affiliation_of(&mut h, 1, "bob@localhost"), None);

    // bob declines; alice is told, through the room.
    let out = h.send(2, to_room("dec1", decline(Some("alice@localhost"), "busy")));
    let m = got(&out, 1);
    assert_eq!(m.len(), 1, "{out:#?}");
    assert_eq!(m[0].attr("to"), Some("alice@localhost"));
    let dec = user_child(&m[0], "decline");
    assert_eq!(dec.attr("from"), Some("bob@localhost"));
    assert_eq!(
        dec.child("reason", ns::MUC_USER).map(|r| r.text()),
        Some("busy".into())
    );
    // A second decline (or one to someone who did not invite) goes nowhere.
    let out = h.send(
        2,
        to_room("dec2", decline(Some("alice@localhost"), "again")),
    );
    assert_eq!(condition(&got(&out, 2)[0]), "not-acceptable");
    assert!(got(&out, 1).is_empty());
    let out = h.send(3, to_room("dec3", decline(Some("dave@localhost"), "spam")));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
    assert!(got(&out, 4).is_empty());
}

#[test]
fn invitation_errors() {
    let mut h = four();
    create(&mut h, &[]);
    // Not an occupant.
    let out = h.send(3, to_room("i", invite("dave@localhost", None)));
    assert_eq!(condition(&got(&out, 3)[0]), "not-acceptable");
    assert!(got(&out, 4).is_empty());
    // An account that does not exist (§7.8.2: item-not-found), and nothing
    // is sent to the other invitees of the same message.
    let mut m = to_room("i", invite("nobody@localhost", None));
    if let Some(x) = m.child_mut("x", ns::MUC_USER) {
        x.push_child(invite("dave@localhost", None));
    }
    let out = h.send(1, m);
    assert_eq!(condition(&got(&out, 1)[0]), "item-not-found");
    assert!(got(&out, 4).is_empty());
    // No 'to', a bad JID, another domain.
    let out = h.send(1, to_room("i", Element::new("invite", ns::MUC_USER)));
    assert_eq!(condition(&got(&out, 1)[0]), "bad-request");
    let out = h.send(1, to_room("i", invite("a@b@c", None)));
    assert_eq!(condition(&got(&out, 1)[0]), "jid-malformed");
    let out = h.send(1, to_room("i", invite("x@elsewhere.example", None)));
    assert_eq!(condition(&got(&out, 1)[0]), "remote-server-not-found");
    // An unknown room.
    let mut m = to_room("i", invite("dave@localhost", None));
    m.set_attr("to", "nope@conference.localhost");
    let out = h.send(1, m);
    assert_eq!(condition(&got(&out, 1)[0]), "item-not-found");
}

#[test]
fn members_only_invitations_need_an_admin_and_make_members() {
    let mut h = four();
    create(&mut h, &[("membersonly", "1"), ("persistentroom", "1")]);
    // carol may not enter yet.
    let out = h.send(3, join("Carol"));
    assert_eq!(condition(&got(&out, 3)[0]), "registration-required");

    // The owner invites carol: she becomes a member, stored, and may enter.
    let out = h.send(1, to_room("i1", invite("carol@localhost", None)));
    assert_eq!(
        user_child(&got(&out, 3)[0], "invite").attr("from"),
        Some("alice@localhost")
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Put { table, .. } if *table == super::ROOM_TABLE)),
        "{out:#?}"
    );
    assert_eq!(
        affiliation_of(&mut h, 1, "carol@localhost").as_deref(),
        Some("member")
    );
    let out = h.send(3, join("Carol"));
    assert!(
        got(&out, 3)
            .iter()
            .any(|p| p.name == "presence" && p.attr("type").is_none())
    );

    // A mere member may not invite (§9.3: forbidden)...
    let out = h.send(3, to_room("i2", invite("dave@localhost", None)));
    assert_eq!(condition(&got(&out, 3)[0]), "forbidden");
    assert!(got(&out, 4).is_empty());
    assert_eq!(affiliation_of(&mut h, 1, "dave@localhost"), None);

    // ...unless the room allows members to invite (muc#roomconfig_allowinvites).
    let form = submitted(ns::MUC_ROOMCONFIG, &[("muc#roomconfig_allowinvites", "1")]);
    let q = Element::new("query", ns::MUC_OWNER).with_child(form);
    let mut store = BTreeMap::new();
    let out = h.send(1, iq("set", "cfg2", Some(ROOM), Some(q)));
    apply(&mut store, &out);
    let out = h.send(3, to_room("i3", invite("dave@localhost", None)));
    apply(&mut store, &out);
    assert_eq!(
        user_child(&got(&out, 4)[0], "invite").attr("from"),
        Some("carol@localhost")
    );
    assert_eq!(
        affiliation_of(&mut h, 1, "dave@localhost").as_deref(),
        Some("member")
    );

    // The setting and the memberships survive a restart.
    let mut h2 = restart(&store);
    h2.online(1, "alice", "a");
    h2.online(4, "dave", "d");
    h2.send(1, join("Alice"));
    let out = h2.send(4, join("Dave"));
    assert!(
        got(&out, 4)
            .iter()
            .any(|p| p.name == "presence" && p.attr("type").is_none())
    );
    let q = Element::new("query", ns::MUC_OWNER);
    let out = h2.send(1, iq("get", "cfg3", Some(ROOM), Some(q)));
    let form = got(&out, 1).remove(0);
    let allow = form
        .child("query", ns::MUC_OWNER)
        .and_then(|q| q.child("x", ns::DATA_FORMS))
        .and_then(|x| {
            x.elements()
                .find(|f| f.attr("var") == Some("muc#roomconfig_allowinvites"))
                .cloned()
        })
        .and_then(|f| f.child("value", ns::DATA_FORMS).map(|v| v.text()));
    assert_eq!(allow.as_deref(), Some("1"));
}

#[test]
fn an_invitation_to_an_offline_user_is_stored() {
    let mut h = four();
    create(&mut h, &[]);
    h.unbind(4);
    let out = h.send(1, to_room("i", invite("dave@localhost", None)));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Put { table, .. } if table.contains("offline"))),
        "{out:#?}"
    );
}

// ---- voice requests -----------------------------------------------------

fn voice_request() -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("to", ROOM)
        .with_attr("id", "vr")
        .with_child(submitted(ns::MUC_REQUEST, &[("muc#role", "participant")]))
}

fn field(form: &Element, var: &str) -> Option<String> {
    form.elements()
        .find(|f| f.attr("var") == Some(var))
        .and_then(|f| f.child("value", ns::DATA_FORMS))
        .map(|v| v.text())
}

#[test]
fn a_visitor_asks_for_voice_and_a_moderator_grants_it() {
    let mut h = four();
    create(&mut h, &[("moderatedroom", "1")]);
    h.send(2, join("Bob"));
    h.send(3, join("Carol"));
    // bob is a visitor: he may not speak.
    let out = h.send(2, voice_request());
    // Only the moderator (alice) gets the approval form.
    assert!(
        got(&out, 3).is_empty() && got(&out, 2).is_empty(),
        "{out:#?}"
    );
    let m = got(&out, 1);
    assert_eq!(m.len(), 1, "{out:#?}");
    assert_eq!(m[0].attr("from"), Some(ROOM));
    let form = m[0]
        .child("x", ns::DATA_FORMS)
        .expect("approval form")
        .clone();
    assert_eq!(form.attr("type"), Some("form"));
    assert_eq!(field(&form, "FORM_TYPE").as_deref(), Some(ns::MUC_REQUEST));
    assert_eq!(field(&form, "muc#role").as_deref(), Some("participant"));
    assert_eq!(field(&form, "muc#jid").as_deref(), Some("bob@localhost/b"));
    assert_eq!(field(&form, "muc#roomnick").as_deref(), Some("Bob"));
    assert_eq!(field(&form, "muc#request_allow").as_deref(), Some("false"));

    // carol (a visitor too) may not approve it.
    let answer = |allow: &str| {
        Element::new("message", ns::CLIENT)
            .with_attr("to", ROOM)
            .with_attr("id", "ok")
            .with_child(submitted(
                ns::MUC_REQUEST,
                &[
                    ("muc#role", "participant"),
                    ("muc#jid", "bob@localhost/b"),
                    ("muc#roomnick", "Bob"),
                    ("muc#request_allow", allow),
                ],
            ))
    };
    let out = h.send(3, answer("true"));
    assert_eq!(condition(&got(&out, 3)[0]), "forbidden");
    assert!(got(&out, 2).is_empty());
    // Declining the request changes nothing.
    let out = h.send(1, answer("false"));
    assert!(out.is_empty(), "{out:#?}");

    // alice approves: bob becomes a participant, and everyone is told.
    let out = h.send(1, answer("true"));
    for s in [1, 2, 3] {
        let p = got(&out, s);
        assert_eq!(p.len(), 1, "{out:#?}");
        assert_eq!(p[0].attr("from"), Some(format!("{ROOM}/Bob").as_str()));
        let item = p[0]
            .child("x", ns::MUC_USER)
            .and_then(|x| x.child("item", ns::MUC_USER))
            .expect("item");
        assert_eq!(item.attr("role"), Some("participant"));
    }
    // bob may speak now; a second request is ignored.
    let out = h.send(
        2,
        Element::new("message", ns::CLIENT)
            .with_attr("to", ROOM)
            .with_attr("type", "groupchat")
            .with_child(Element::new("body", ns::CLIENT).with_text("thanks")),
    );
    assert_eq!(got(&out, 3).len(), 1, "{out:#?}");
    assert!(h.send(2, voice_request()).is_empty());
    // Not an occupant: not-acceptable.
    let out = h.send(4, voice_request());
    assert_eq!(condition(&got(&out, 4)[0]), "not-acceptable");
}
