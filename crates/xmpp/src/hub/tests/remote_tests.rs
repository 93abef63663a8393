//! Federation routing in the hub: remote users in our rooms, invitations
//! and IQs across servers, pubsub and PEP notifications to remote JIDs,
//! cross-server chats in the local archive.

use tributary_xmpp_xml::Element;

use super::muc_tests::{ROOM, codes, condition, config_form, got, join, occ, open_room};
use super::*;
use crate::hub::mam::ARCHIVE_TABLE;

const ZED: &str = "zed@b.test/r";

fn fed() -> H {
    let mut c = super::muc_tests::cfg();
    c.federation = true;
    let mut h = H::with_config(c);
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    h
}

/// Feeds a stanza from another server.
fn remote(h: &mut H, stanza: Element) -> Vec<Output> {
    let mut out = Vec::new();
    h.hub.handle_remote_stanza(stanza, &accounts, NOW, &mut out);
    out
}

/// The stanzas that leave for other servers.
fn sent_remote(out: &[Output]) -> Vec<Element> {
    out.iter()
        .filter_map(|o| match o {
            Output::Remote { stanza } => Some(stanza.clone()),
            _ => None,
        })
        .collect()
}

fn remote_join(h: &mut H, nick: &str) -> Vec<Output> {
    let p = with_addr(join(nick, vec![]), ZED, &occ(nick));
    remote(h, p)
}

#[test]
fn a_remote_user_joins_a_room_and_everyone_sees_everyone() {
    let mut h = fed();
    open_room(&mut h);
    let out = remote_join(&mut h, "Zed");
    let to_zed = sent_remote(&out);
    assert!(
        to_zed.iter().all(|s| s.attr("to") == Some(ZED)),
        "{to_zed:?}"
    );
    // The others' presence, then Zed's own with 110, history, subject.
    let own = to_zed
        .iter()
        .find(|s| s.name == "presence" && s.attr("from") == Some(occ("Zed").as_str()))
        .expect("self-presence");
    assert!(codes(own).contains(&"110".to_string()), "{}", own.to_xml());
    assert!(
        to_zed
            .iter()
            .any(|s| s.attr("from") == Some(occ("Alice").as_str()))
    );
    assert!(
        to_zed
            .iter()
            .any(|s| s.child("subject", ns::CLIENT).is_some())
    );
    // Local occupants see Zed arrive.
    for session in [1, 2] {
        let p = got(&out, session);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].attr("from"), Some(occ("Zed").as_str()));
    }
    assert_eq!(h.hub.remote_sessions.len(), 1);
}

#[test]
fn groupchat_flows_both_ways_between_local_and_remote_occupants() {
    let mut h = fed();
    open_room(&mut h);
    remote_join(&mut h, "Zed");

    let out = remote(
        &mut h,
        with_addr(message(ROOM, "groupchat", "hi from b"), ZED, ROOM),
    );
    for session in [1, 2] {
        let m = got(&out, session);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].attr("from"), Some(occ("Zed").as_str()));
    }
    let echo = sent_remote(&out);
    assert_eq!(echo.len(), 1, "{echo:?}");
    assert_eq!(echo[0].attr("to"), Some(ZED));

    let out = h.send(1, message(ROOM, "groupchat", "hi from a"));
    let to_zed = sent_remote(&out);
    assert_eq!(to_zed.len(), 1, "{to_zed:?}");
    assert_eq!(to_zed[0].attr("from"), Some(occ("Alice").as_str()));
    assert_eq!(to_zed[0].attr("to"), Some(ZED));
    assert_eq!(
        to_zed[0]
            .child("body", ns::CLIENT)
            .map(|b| b.text())
            .as_deref(),
        Some("hi from a")
    );
}

#[test]
fn a_remote_occupant_leaves_and_its_session_id_goes() {
    let mut h = fed();
    open_room(&mut h);
    remote_join(&mut h, "Zed");
    let out = remote(&mut h, unavailable(ZED, &occ("Zed")));
    assert_eq!(got(&out, 1)[0].attr("type"), Some("unavailable"));
    assert_eq!(sent_remote(&out)[0].attr("type"), Some("unavailable"));
    assert_eq!(h.hub.remote_sessions.len(), 0);
}

#[test]
fn errors_to_remote_senders_go_back_to_their_server() {
    let mut h = fed();
    open_room(&mut h);
    // A groupchat from a non-occupant.
    let out = remote(
        &mut h,
        with_addr(message(ROOM, "groupchat", "x"), ZED, ROOM),
    );
    let back = sent_remote(&out);
    assert_eq!(back.len(), 1);
    assert_eq!(condition(&back[0]), "not-acceptable");
    assert_eq!(h.hub.remote_sessions.len(), 0);
}

#[test]
fn invitations_to_remote_jids_leave_for_their_server() {
    let mut h = fed();
    open_room(&mut h);
    let invite = message(ROOM, "", "").with_child(
        Element::new("x", ns::MUC_USER)
            .with_child(Element::new("invite", ns::MUC_USER).with_attr("to", "zed@b.test")),
    );
    let mut invite = invite;
    invite.remove_children("body", ns::CLIENT);
    invite.remove_attr("type");
    let out = h.send(1, invite);
    let sent = sent_remote(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(sent[0].attr("from"), Some(ROOM));
    assert_eq!(sent[0].attr("to"), Some("zed@b.test"));
    let inv = sent[0]
        .child("x", ns::MUC_USER)
        .and_then(|x| x.child("invite", ns::MUC_USER))
        .expect("invite");
    assert_eq!(inv.attr("from"), Some(bare("alice").as_str()));
}

#[test]
fn without_federation_invitations_to_remote_jids_bounce() {
    let mut h = H::with_config(super::muc_tests::cfg());
    h.online(1, "alice", "a");
    h.online(2, "bob", "b");
    open_room(&mut h);
    let mut invite = Element::new("message", ns::CLIENT).with_attr("to", ROOM);
    invite.push_child(
        Element::new("x", ns::MUC_USER)
            .with_child(Element::new("invite", ns::MUC_USER).with_attr("to", "zed@b.test")),
    );
    let out = h.send(1, invite);
    assert_eq!(condition(&got(&out, 1)[0]), "remote-server-not-found");
}

#[test]
fn a_remote_user_creates_and_configures_a_room() {
    let mut h = fed();
    let out = remote_join(&mut h, "Zed");
    let own = sent_remote(&out);
    assert!(
        own.iter().any(|s| codes(s).contains(&"201".to_string())),
        "{own:?}"
    );
    let out = remote(&mut h, with_addr(config_form(&[]), ZED, ROOM));
    assert_eq!(sent_remote(&out)[0].attr("type"), Some("result"));
    let out = h.send(1, join("Alice", vec![]));
    let mine = got(&out, 1);
    assert!(codes(mine.first().expect("presence")).is_empty() || mine.len() > 1);
    assert!(
        sent_remote(&out)
            .iter()
            .any(|s| s.attr("from") == Some(occ("Alice").as_str()))
    );
}

#[test]
fn iqs_from_remote_users_to_accounts_and_the_server_are_answered() {
    let mut h = fed();
    let disco = iq(
        "get",
        "d1",
        Some(&bare("alice")),
        Some(Element::new("query", ns::DISCO_INFO)),
    );
    let out = remote(&mut h, with_addr(disco, ZED, &bare("alice")));
    let back = sent_remote(&out);
    assert_eq!(back.len(), 1, "{out:?}");
    assert_eq!(back[0].attr("type"), Some("result"));
    assert_eq!(back[0].attr("to"), Some(ZED));
    assert!(back[0].child("query", ns::DISCO_INFO).is_some());

    let vcard = iq(
        "get",
        "v1",
        Some(&bare("alice")),
        Some(Element::new("vCard", ns::VCARD)),
    );
    let out = remote(&mut h, with_addr(vcard, ZED, &bare("alice")));
    let back = sent_remote(&out);
    assert_eq!(back.len(), 1, "{out:?}");
    assert_eq!(back[0].attr("to"), Some(ZED));

    // Roster and archive queries are the account's own business.
    let roster = iq(
        "get",
        "r1",
        Some(&bare("alice")),
        Some(Element::new("query", ns::ROSTER)),
    );
    let out = remote(&mut h, with_addr(roster, ZED, &bare("alice")));
    assert_eq!(sent_remote(&out)[0].attr("type"), Some("error"));
    assert_eq!(h.hub.remote_sessions.len(), 0);
}

#[test]
fn chats_across_servers_are_archived_on_the_local_side() {
    let mut h = fed();
    let out = h.send(1, message("zed@b.test", "chat", "to b"));
    assert_eq!(sent_remote(&out).len(), 1);
    let puts = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Put { table, .. } if *table == ARCHIVE_TABLE))
            .count()
    };
    assert_eq!(puts(&out), 1, "{out:?}");

    let incoming = with_addr(
        message(&full("alice", "a"), "chat", "to a"),
        ZED,
        &full("alice", "a"),
    );
    let out = remote(&mut h, incoming);
    assert_eq!(puts(&out), 1, "{out:?}");
    let m = got(&out, 1);
    let sid = m[0].child("stanza-id", ns::SID).expect("stanza-id");
    assert_eq!(sid.attr("by"), Some(bare("alice").as_str()));
}
