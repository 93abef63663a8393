//! Messages in a room: groupchat broadcast with history and archive,
//! subject changes (XEP-0045 §7.4, §8.1) and private messages (§7.5).

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::MucCx;
use super::invite::Mediated;
use super::room::{Role, Subject};
use super::voice;
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

impl Hub {
    /// A message to the room's bare JID.
    pub(super) fn room_message(
        &mut self,
        cx: &MucCx,
        room: BareJid,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let mtype = stanza.attr("type");
        if mtype == Some("error") {
            return;
        }
        let Some(r) = self.muc.rooms.get(&room) else {
            return self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
        };
        if let Some(what) = Mediated::of(&stanza) {
            return self.room_mediated(cx, &room, &stanza, what, out);
        }
        if let Some(form) = voice::request_form(&stanza) {
            return self.room_voice_form(cx, &room, &stanza, form, out);
        }
        let Some(i) = r.by_session(cx.session) else {
            return self.bounce(cx.session, &stanza, StanzaError::not_acceptable(), out);
        };
        if mtype != Some("groupchat") {
            return self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
        }
        let (role, nick) = (r.occupants[i].role, r.occupants[i].nick.clone());
        let change_subject = r.config.change_subject;
        if role < Role::Participant {
            let e = StanzaError::forbidden().with_text("visitors may not speak in this room");
            return self.bounce(cx.session, &stanza, e, out);
        }
        let body = stanza.child("body", ns::CLIENT).is_some();
        let subject = stanza.child("subject", ns::CLIENT).map(|s| s.text());
        if let Some(text) = &subject
            && !body
        {
            let may = role == Role::Moderator || change_subject;
            if !may {
                let e = StanzaError::forbidden().with_text("you may not change the subject");
                return self.bounce(cx.session, &stanza, e, out);
            }
            if let Some(r) = self.muc.rooms.get_mut(&room) {
                r.subject = Some(Subject {
                    nick: nick.clone(),
                    text: text.clone(),
                });
            }
            self.save_room(&room, out);
        }
        let mut m = stanza.clone();
        m.remove_attr("to");
        m.set_attr("from", format!("{room}/{nick}"));
        m.children.retain(|n| match n {
            tributary_xmpp_xml::Node::Element(e) => {
                !(e.is("stanza-id", ns::SID) && e.attr("by") == Some(room.as_str()))
            }
            _ => true,
        });
        if body && let Some(id) = self.archive_room_message(&room, &nick, &m, cx.now, out) {
            m.push_child(
                Element::new("stanza-id", ns::SID)
                    .with_attr("by", room.to_string())
                    .with_attr("id", id),
            );
        }
        let Some(r) = self.muc.rooms.get_mut(&room) else {
            return;
        };
        for o in &r.occupants {
            let mut copy = m.clone();
            copy.set_attr("to", o.jid.to_string());
            deliver(out, o.session, copy);
        }
        if body || subject.is_some() {
            r.remember(m, cx.now);
        }
    }

    /// A message to `room/nick`: a private message between occupants.
    pub(super) fn private_message(
        &mut self,
        cx: &MucCx,
        room: BareJid,
        nick: String,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        match stanza.attr("type") {
            Some("error") => return,
            Some("groupchat") => {
                return self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
            }
            _ => {}
        }
        let Some(r) = self.muc.rooms.get(&room) else {
            return self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
        };
        let Some(me) = r.by_session(cx.session) else {
            return self.bounce(cx.session, &stanza, StanzaError::not_acceptable(), out);
        };
        let Some(target) = r.by_nick(&nick) else {
            return self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
        };
        let target = &r.occupants[target];
        let mut m = stanza.clone();
        m.set_attr("from", r.occupant_jid(&r.occupants[me].nick));
        m.set_attr("to", target.jid.to_string());
        if m.child("x", ns::MUC_USER).is_none() {
            m.push_child(Element::new("x", ns::MUC_USER));
        }
        deliver(out, target.session, m);
    }
}
