//! Service discovery of the MUC service and of rooms (XEP-0045 §6).

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::MucCx;
use super::room::{Affiliation, Room};
use crate::hub::iq::result_for;
use crate::hub::mam::form::Field;
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

fn identity(name: &str) -> Element {
    Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", "conference")
        .with_attr("type", "text")
        .with_attr("name", name)
}

fn feature(var: &str) -> Element {
    Element::new("feature", ns::DISCO_INFO).with_attr("var", var)
}

/// The features a room advertises for its configuration.
fn room_features(r: &Room) -> Vec<&'static str> {
    let c = &r.config;
    let pick = |b: bool, yes: &'static str, no: &'static str| if b { yes } else { no };
    vec![
        ns::MUC,
        ns::MUC_SELF_PING,
        ns::MUC_REQUEST,
        ns::MAM,
        ns::SID,
        pick(c.persistent, "muc_persistent", "muc_temporary"),
        pick(c.members_only, "muc_membersonly", "muc_open"),
        pick(
            r.password_protected(),
            "muc_passwordprotected",
            "muc_unsecured",
        ),
        pick(c.public, "muc_public", "muc_hidden"),
        pick(c.whois_anyone, "muc_nonanonymous", "muc_semianonymous"),
        pick(c.moderated, "muc_moderated", "muc_unmoderated"),
    ]
}

impl Hub {
    /// disco#info of the service.
    pub(super) fn muc_service_info(
        &self,
        cx: &MucCx,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        if query.attr("node").is_some() {
            return self.bounce(cx.session, stanza, StanzaError::item_not_found(), out);
        }
        let mut q = Element::new("query", ns::DISCO_INFO).with_child(identity("Chatrooms"));
        for f in [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            ns::MUC,
            ns::MUC_SELF_PING,
            ns::MAM,
            ns::PING,
        ] {
            q.push_child(feature(f));
        }
        deliver(out, cx.session, result_for(stanza).with_child(q));
    }

    /// disco#items of the service: the public rooms.
    pub(super) fn muc_service_items(&self, cx: &MucCx, stanza: &Element, out: &mut Vec<Output>) {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        for (jid, r) in &self.muc.rooms {
            if r.config.public && !r.locked {
                let name = if r.config.name.is_empty() {
                    jid.node()
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default()
                } else {
                    r.config.name.clone()
                };
                q.push_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", jid.to_string())
                        .with_attr("name", name),
                );
            }
        }
        deliver(out, cx.session, result_for(stanza).with_child(q));
    }

    /// disco#info of a room: identity, features and the `muc#roominfo` form.
    pub(super) fn room_info(
        &self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get(room) else {
            return self.bounce(cx.session, stanza, StanzaError::item_not_found(), out);
        };
        let owner = r.affiliation(&cx.from.to_bare()) == Affiliation::Owner;
        if query.attr("node").is_some() || (r.locked && !owner) {
            return self.bounce(cx.session, stanza, StanzaError::item_not_found(), out);
        }
        let name = if r.config.name.is_empty() {
            room.node()
                .map(|n| n.as_str().to_string())
                .unwrap_or_default()
        } else {
            r.config.name.clone()
        };
        let mut q = Element::new("query", ns::DISCO_INFO).with_child(identity(&name));
        for f in room_features(r) {
            q.push_child(feature(f));
        }
        let occupants = r.occupants.len().to_string();
        let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", "result");
        for f in [
            Field::hidden("FORM_TYPE", "http://jabber.org/protocol/muc#roominfo"),
            Field::new(
                "muc#roominfo_description",
                "text-single",
                "Description",
                &r.config.desc,
            ),
            Field::new(
                "muc#roominfo_occupants",
                "text-single",
                "Occupants",
                &occupants,
            ),
            Field::new(
                "muc#roominfo_subject",
                "text-single",
                "Subject",
                r.subject.as_ref().map_or("", |s| s.text.as_str()),
            ),
        ] {
            x.push_child(f.to_element());
        }
        q.push_child(x);
        deliver(out, cx.session, result_for(stanza).with_child(q));
    }

    /// disco#items of a room: its occupants, shown to occupants only.
    pub(super) fn room_items(
        &self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        if let Some(r) = self.muc.rooms.get(room)
            && r.by_session(cx.session).is_some()
        {
            for o in &r.occupants {
                q.push_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", r.occupant_jid(&o.nick))
                        .with_attr("name", o.nick.clone()),
                );
            }
        }
        deliver(out, cx.session, result_for(stanza).with_child(q));
    }
}
