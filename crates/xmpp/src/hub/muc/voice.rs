//! Voice requests (XEP-0045 §7.13) and their approval by moderators (§8.6).
//!
//! A visitor submits a `muc#request` form (`muc#role` = `participant`) in a
//! message to the room; the room sends every moderator present the approval
//! form (`muc#jid`, `muc#roomnick`, `muc#request_allow` = false) from its
//! bare JID. A moderator who submits it with `muc#request_allow` true grants
//! voice as a `muc#admin` role change would (§8.3: presence to everyone).
//! A request from an occupant who already has voice is ignored; an approval
//! from someone who is not a moderator is `<forbidden/>`.

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::MucCx;
use super::room::Role;
use crate::hub::mam::form::{self, Field};
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

/// The submitted `muc#request` form of a normal message, if it has one.
pub(super) fn request_form(stanza: &Element) -> Option<&Element> {
    if !matches!(stanza.attr("type"), None | Some("normal")) {
        return None;
    }
    stanza
        .elements()
        .filter(|x| x.is("x", ns::DATA_FORMS) && x.attr("type") == Some("submit"))
        .find(|x| {
            form::values(x)
                .get("FORM_TYPE")
                .is_some_and(|v| v.first().map(String::as_str) == Some(ns::MUC_REQUEST))
        })
}

/// The first value of `var`.
fn first<'a>(
    values: &'a std::collections::BTreeMap<String, Vec<String>>,
    var: &str,
) -> Option<&'a str> {
    values.get(var).and_then(|v| v.first()).map(String::as_str)
}

/// The approval form sent to moderators (§8.6).
fn approval_form(jid: &str, nick: &str) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(Element::new("title", ns::DATA_FORMS).with_text("Voice request"))
        .with_child(Element::new("instructions", ns::DATA_FORMS).with_text(
            "To approve this request for voice, select the \"Grant voice to this person?\" \
             checkbox and submit the form.",
        ));
    for f in [
        Field::hidden("FORM_TYPE", ns::MUC_REQUEST),
        Field::new("muc#role", "list-single", "Requested role", "participant")
            .with_options(&["participant"]),
        Field::new("muc#jid", "jid-single", "User ID", jid),
        Field::new("muc#roomnick", "text-single", "Room Nickname", nick),
        Field::new(
            "muc#request_allow",
            "boolean",
            "Grant voice to this person?",
            "false",
        ),
    ] {
        x.push_child(f.to_element());
    }
    x
}

impl Hub {
    /// A `muc#request` form sent to `room`: a voice request, or a
    /// moderator's answer to one.
    pub(super) fn room_voice_form(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        stanza: &Element,
        x: &Element,
        out: &mut Vec<Output>,
    ) {
        let values = form::values(x);
        let result = if values.contains_key("muc#request_allow") {
            self.voice_approval(cx, room, &values, out)
        } else {
            self.voice_request(cx, room, stanza, &values, out)
        };
        if let Err(e) = result {
            self.bounce(cx.session, stanza, e, out);
        }
    }

    /// §7.13: a visitor asks for voice; every moderator gets the form.
    fn voice_request(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        stanza: &Element,
        values: &std::collections::BTreeMap<String, Vec<String>>,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let me = r.by_session(cx.session).ok_or_else(|| {
            StanzaError::not_acceptable().with_text("only occupants ask for voice")
        })?;
        if first(values, "muc#role").is_some_and(|role| role != "participant") {
            return Err(
                StanzaError::bad_request().with_text("only voice (participant) is requested")
            );
        }
        let occ = &r.occupants[me];
        if occ.role != Role::Visitor {
            return Ok(());
        }
        let form = approval_form(&occ.jid.to_string(), &occ.nick);
        for m in r.occupants.iter().filter(|o| o.role == Role::Moderator) {
            let mut msg = Element::new("message", ns::CLIENT)
                .with_attr("from", room.to_string())
                .with_attr("to", m.jid.to_string())
                .with_child(form.clone());
            if let Some(id) = stanza.attr("id") {
                msg.set_attr("id", id);
            }
            deliver(out, m.session, msg);
        }
        Ok(())
    }

    /// §8.6: a moderator submits the approval form.
    fn voice_approval(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        values: &std::collections::BTreeMap<String, Vec<String>>,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let moderator = r
            .by_session(cx.session)
            .is_some_and(|i| r.occupants[i].role == Role::Moderator);
        if !moderator {
            return Err(StanzaError::forbidden().with_text("only moderators grant voice"));
        }
        if !matches!(first(values, "muc#request_allow"), Some("1" | "true")) {
            return Ok(());
        }
        let nick = first(values, "muc#roomnick")
            .ok_or_else(|| StanzaError::bad_request().with_text("muc#roomnick is missing"))?;
        let i = r.by_nick(nick).ok_or_else(StanzaError::item_not_found)?;
        let target = &r.occupants[i];
        // The nickname may have changed hands since the request.
        if let Some(jid) = first(values, "muc#jid")
            && jid != target.jid.to_string()
        {
            return Err(StanzaError::item_not_found().with_text("that occupant has left"));
        }
        if target.role != Role::Visitor {
            return Ok(());
        }
        let nick = nick.to_string();
        self.change_role(cx, room, &nick, Role::Participant, None, out)
    }
}
