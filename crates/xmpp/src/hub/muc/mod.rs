//! Multi-User Chat (XEP-0045) on the service domain (`conference.<domain>`),
//! with self-ping (XEP-0410) and room archives (XEP-0313, in `hub::mam`).
//!
//! Rooms live in the hub, so occupants are the hub's own sessions and no
//! routing between components is needed. What this service does where the
//! XEP leaves room:
//!
//! - Any local user may create a room by joining it. A new room is locked
//!   (`201`) until its owner submits the configuration form (an empty
//!   `submit` form makes it an instant room) or cancels it (which destroys
//!   it); others get `<item-not-found/>` meanwhile, as §10.1.1 says.
//! - One occupant is one session: a second resource of the same account
//!   needs its own nickname (`<conflict/>` otherwise).
//! - Nicknames are at most [`MAX_NICK`] characters (`<not-acceptable/>`);
//!   an invalid one is already a `<jid-malformed/>` JID.
//! - Private messages go between occupants only, with a `muc#user` `<x/>`.
//! - IQs to another occupant are not relayed (`<feature-not-implemented/>`);
//!   a ping to one's own occupant JID is answered (XEP-0410).
//! - A mediated invitation's decline is relayed only to someone who
//!   invited the decliner (`invite`), so the room relays nothing else; a
//!   voice request goes to the moderators present (`voice`).
//! - A temporary room is destroyed when its last occupant leaves;
//!   persistent rooms are stored (table `xmpp_muc_room`, keyed by room JID,
//!   JSON `{"config":{..},"affiliations":[[jid,aff]],"subject":{..}?}`) and
//!   their history is rebuilt from the room's archive at start.

mod admin;
mod disco;
mod invite;
mod join;
mod message;
mod owner;
pub(super) mod room;
mod store;
mod voice;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::iq::result_for;
use super::sessions::deliver;
use super::{Accounts, Hub, Output, SessionId, StanzaError};
use crate::ns;
use room::{Affiliation, Occupant, Role, Room};

pub(super) use store::ROOM_TABLE;

/// The longest nickname, in characters.
pub(super) const MAX_NICK: usize = 64;

/// The MUC service's state.
#[derive(Default)]
pub(super) struct Muc {
    /// The service domain, normalized; `None` when disabled.
    pub(super) domain: Option<String>,
    /// Every room.
    pub(super) rooms: BTreeMap<BareJid, Room>,
    /// Rooms each session is in.
    pub(super) joined: HashMap<SessionId, BTreeSet<BareJid>>,
}

/// The sender of a stanza to the service.
pub(super) struct MucCx<'a> {
    /// Its session.
    pub(super) session: SessionId,
    /// Its full JID.
    pub(super) from: FullJid,
    /// The time.
    pub(super) now: u64,
    /// The account lookup (invitations name users who must exist).
    pub(super) accounts: &'a dyn Accounts,
}

/// `<x xmlns='muc#user'>` with an item and status codes.
pub(super) fn x_user(item: Element, codes: &[u16]) -> Element {
    let mut x = Element::new("x", ns::MUC_USER).with_child(item);
    for c in codes {
        x.push_child(Element::new("status", ns::MUC_USER).with_attr("code", c.to_string()));
    }
    x
}

/// `<item affiliation role [jid] [nick]/>` in `ns`.
pub(super) fn item(
    ns: &str,
    aff: Affiliation,
    role: Role,
    jid: Option<&str>,
    nick: Option<&str>,
) -> Element {
    let mut item = Element::new("item", ns)
        .with_attr("affiliation", aff.as_str())
        .with_attr("role", role.as_str());
    if let Some(jid) = jid {
        item.set_attr("jid", jid);
    }
    if let Some(nick) = nick {
        item.set_attr("nick", nick);
    }
    item
}

/// Whether a viewer with `role` sees real JIDs in `room`.
fn sees_jids(room: &Room, role: Role) -> bool {
    room.config.whois_anyone || role == Role::Moderator
}

/// How an occupant's presence is shown to the room.
pub(super) struct Shown<'a> {
    /// Available presence (the occupant's own) or an unavailable one.
    pub(super) base: Element,
    /// The affiliation shown.
    pub(super) aff: Affiliation,
    /// The role shown.
    pub(super) role: Role,
    /// `nick` on the item (nickname changes).
    pub(super) nick: Option<&'a str>,
    /// Children of the item (`<actor/>`, `<reason/>`).
    pub(super) extra: Vec<Element>,
    /// Status codes for everyone.
    pub(super) codes: &'a [u16],
    /// Status codes for the occupant itself (110 is added).
    pub(super) self_codes: &'a [u16],
}

/// Sends `occ`'s presence to every occupant of `room`, and to `occ` itself
/// when `to_self` (after the others: the self-presence comes last).
pub(super) fn broadcast(
    room: &Room,
    occ: &Occupant,
    shown: &Shown<'_>,
    to_self: bool,
    out: &mut Vec<Output>,
) {
    for viewer in &room.occupants {
        if viewer.session != occ.session {
            deliver(out, viewer.session, presence_for(room, occ, shown, viewer));
        }
    }
    if to_self {
        deliver(out, occ.session, presence_for(room, occ, shown, occ));
    }
}

/// `occ`'s presence as `viewer` sees it.
pub(super) fn presence_for(
    room: &Room,
    occ: &Occupant,
    shown: &Shown<'_>,
    viewer: &Occupant,
) -> Element {
    let own = viewer.session == occ.session;
    let mut p = shown.base.clone();
    p.set_attr("from", room.occupant_jid(&occ.nick));
    p.set_attr("to", viewer.jid.to_string());
    let jid = occ.jid.to_string();
    let show_jid = own || sees_jids(room, viewer.role);
    let mut it = item(
        ns::MUC_USER,
        shown.aff,
        shown.role,
        show_jid.then_some(jid.as_str()),
        shown.nick,
    );
    for e in &shown.extra {
        it.push_child(e.clone());
    }
    let mut codes: Vec<u16> = if own {
        shown.self_codes.to_vec()
    } else {
        shown.codes.to_vec()
    };
    if own && !codes.contains(&110) {
        codes.push(110);
    }
    codes.sort_unstable();
    p.push_child(x_user(it, &codes));
    p
}

/// The occupant's own presence, as it is shown while it is in the room.
pub(super) fn available(room: &Room, occ: &Occupant) -> Shown<'static> {
    Shown {
        base: occ.presence.clone(),
        aff: room.affiliation(&occ.jid.to_bare()),
        role: occ.role,
        nick: None,
        extra: Vec::new(),
        codes: &[],
        self_codes: &[],
    }
}

/// `<presence type='unavailable'/>`.
pub(super) fn unavailable_base() -> Element {
    Element::new("presence", ns::CLIENT).with_attr("type", "unavailable")
}

impl Hub {
    /// Whether `domain` is the MUC service's.
    pub(super) fn is_muc_domain(&self, domain: &str) -> bool {
        self.muc.domain.as_deref() == Some(domain)
    }

    /// A stanza addressed to the MUC service, a room or an occupant.
    pub(super) fn muc_stanza(
        &mut self,
        cx: &MucCx<'_>,
        to: Jid,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let session = cx.session;
        if to.node().is_none() {
            return self.muc_service_stanza(cx, stanza, out);
        }
        let room = to.to_bare();
        let nick = to.resource().map(|r| r.as_str().to_string());
        match (stanza.name.as_str(), nick) {
            ("presence", Some(nick)) => self.room_presence(cx, room, nick, stanza, out),
            ("presence", None) if stanza.attr("type").is_none() => {
                self.bounce(session, &stanza, StanzaError::jid_malformed(), out);
            }
            ("message", None) => self.room_message(cx, room, stanza, out),
            ("message", Some(nick)) => self.private_message(cx, room, nick, stanza, out),
            ("iq", None) => self.room_iq(cx, room, stanza, out),
            ("iq", Some(nick)) => self.occupant_iq(cx, room, nick, stanza, out),
            _ => {}
        }
    }

    /// Stanzas to the service itself: disco, ping.
    fn muc_service_stanza(&mut self, cx: &MucCx, stanza: Element, out: &mut Vec<Output>) {
        if stanza.name != "iq" {
            if stanza.name == "message" {
                self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out);
            }
            return;
        }
        let Some(payload) = iq_request(&stanza) else {
            return self.iq_not_request(cx, &stanza, out);
        };
        let get = stanza.attr("type") == Some("get");
        match (payload.ns.as_str(), payload.name.as_str()) {
            (ns::DISCO_INFO, "query") if get => self.muc_service_info(cx, &stanza, &payload, out),
            (ns::DISCO_ITEMS, "query") if get => self.muc_service_items(cx, &stanza, out),
            (ns::PING, "ping") if get => deliver(out, cx.session, result_for(&stanza)),
            _ => self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out),
        }
    }

    /// IQs to a room: disco, admin, owner, archive queries.
    fn room_iq(&mut self, cx: &MucCx, room: BareJid, stanza: Element, out: &mut Vec<Output>) {
        let Some(payload) = iq_request(&stanza) else {
            return self.iq_not_request(cx, &stanza, out);
        };
        if !self.muc.rooms.contains_key(&room) {
            return self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
        }
        let get = stanza.attr("type") == Some("get");
        match (payload.ns.as_str(), payload.name.as_str()) {
            (ns::DISCO_INFO, "query") if get => self.room_info(cx, &room, &stanza, &payload, out),
            (ns::DISCO_ITEMS, "query") if get => self.room_items(cx, &room, &stanza, out),
            (ns::MUC_ADMIN, "query") => self.muc_admin(cx, &room, &stanza, &payload, get, out),
            (ns::MUC_OWNER, "query") => self.muc_owner(cx, &room, &stanza, &payload, get, out),
            (ns::MAM, _) => self.room_mam_iq(cx, &room, &stanza, &payload, out),
            (ns::PING, "ping") if get => deliver(out, cx.session, result_for(&stanza)),
            _ => self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out),
        }
    }

    /// IQs to an occupant: self-ping (XEP-0410); nothing is relayed.
    fn occupant_iq(
        &mut self,
        cx: &MucCx,
        room: BareJid,
        nick: String,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let Some(payload) = iq_request(&stanza) else {
            return;
        };
        let Some(r) = self.muc.rooms.get(&room) else {
            return self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
        };
        let me = r.by_session(cx.session);
        let joined_as_nick = me.is_some_and(|i| r.occupants[i].nick == nick);
        if payload.is("ping", ns::PING) && stanza.attr("type") == Some("get") {
            if joined_as_nick {
                deliver(out, cx.session, result_for(&stanza));
            } else if me.is_none() {
                self.bounce(cx.session, &stanza, StanzaError::not_acceptable(), out);
            } else if r.by_nick(&nick).is_some() {
                self.bounce(cx.session, &stanza, feature_not_implemented(), out);
            } else {
                self.bounce(cx.session, &stanza, StanzaError::item_not_found(), out);
            }
            return;
        }
        let err = if me.is_none() {
            StanzaError::not_acceptable()
        } else if r.by_nick(&nick).is_none() {
            StanzaError::item_not_found()
        } else {
            feature_not_implemented()
        };
        self.bounce(cx.session, &stanza, err, out);
    }

    /// A result or error IQ, or a malformed request, sent to the service.
    fn iq_not_request(&self, cx: &MucCx, stanza: &Element, out: &mut Vec<Output>) {
        if matches!(stanza.attr("type"), Some("get" | "set")) {
            self.bounce(cx.session, stanza, StanzaError::bad_request(), out);
        }
    }

    /// The session is going away or became unavailable: it leaves every
    /// room it was in.
    pub(super) fn muc_session_gone(&mut self, session: SessionId, out: &mut Vec<Output>) {
        let Some(rooms) = self.muc.joined.remove(&session) else {
            return;
        };
        for room in rooms {
            self.leave_room(&room, session, unavailable_base(), out);
        }
    }
}

/// The payload of an iq get/set with an id and one child; `None` for
/// results, errors and malformed requests.
fn iq_request(stanza: &Element) -> Option<Element> {
    if !matches!(stanza.attr("type"), Some("get" | "set")) || stanza.attr("id").is_none() {
        return None;
    }
    let mut children = stanza.elements();
    let payload = children.next()?.clone();
    if children.next().is_some() {
        return None;
    }
    Some(payload)
}

/// `cancel`/`feature-not-implemented`.
fn feature_not_implemented() -> StanzaError {
    StanzaError::new("cancel", "feature-not-implemented")
}

/// `auth`/`not-authorized`.
fn not_authorized() -> StanzaError {
    StanzaError::new("auth", "not-authorized")
}

/// `auth`/`registration-required`.
fn registration_required() -> StanzaError {
    StanzaError::new("auth", "registration-required")
}

/// `cancel`/`conflict`.
fn conflict() -> StanzaError {
    StanzaError::new("cancel", "conflict")
}
