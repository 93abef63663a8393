//! Entering, changing nickname or presence in, and leaving a room
//! (XEP-0045 §7.2, §7.6, §7.7, §7.14), with the history and subject sent on
//! entering.

use jid::BareJid;
use tributary_xmpp_xml::Element;

use super::room::{Affiliation, Occupant, Room};
use super::{
    MAX_NICK, MucCx, Shown, available, broadcast, conflict, not_authorized, presence_for,
    registration_required, unavailable_base,
};
use crate::hub::mam::time::parse_stamp;
use crate::hub::offline::timestamp;
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

/// What an occupant's presence keeps: show, status, priority and foreign
/// extensions, without addresses, type, id or MUC elements.
pub(super) fn clean_presence(stanza: &Element) -> Element {
    let mut p = Element::new("presence", ns::CLIENT);
    for a in &stanza.attrs {
        if a.ns.is_some() {
            p.attrs.push(a.clone());
        }
    }
    p.children = stanza.children.clone();
    p.remove_children("x", ns::MUC);
    p.remove_children("x", ns::MUC_USER);
    p
}

/// A nickname this service accepts.
fn check_nick(nick: &str) -> Result<(), StanzaError> {
    if nick.trim().is_empty() {
        return Err(StanzaError::jid_malformed());
    }
    if nick.chars().count() > MAX_NICK {
        return Err(StanzaError::not_acceptable().with_text("nickname too long"));
    }
    Ok(())
}

/// Whether `user` may enter `room` as `nick` (XEP-0045 §7.2.3-§7.2.9).
fn admission(room: &Room, user: &BareJid, nick: &str, stanza: &Element) -> Result<(), StanzaError> {
    let aff = room.affiliation(user);
    if room.locked && aff != Affiliation::Owner {
        return Err(StanzaError::item_not_found().with_text("the room is not configured yet"));
    }
    if aff == Affiliation::Outcast {
        return Err(StanzaError::forbidden().with_text("you are banned from this room"));
    }
    if room.config.members_only && aff < Affiliation::Member {
        return Err(registration_required());
    }
    if let Some(secret) = &room.config.password
        && aff != Affiliation::Owner
    {
        let given = stanza
            .child("x", ns::MUC)
            .and_then(|x| x.child("password", ns::MUC))
            .map(|p| p.text());
        if given.as_deref() != Some(secret.as_str()) {
            return Err(not_authorized());
        }
    }
    if room.by_nick(nick).is_some() {
        return Err(conflict());
    }
    let max = room.config.max_users;
    if max > 0 && room.occupants.len() >= max && aff < Affiliation::Admin {
        return Err(StanzaError::new("wait", "service-unavailable").with_text("the room is full"));
    }
    Ok(())
}

/// The history an entering occupant asked for (XEP-0045 §7.2.15).
struct HistoryWish {
    maxstanzas: Option<usize>,
    since: Option<u64>,
    none: bool,
}

impl HistoryWish {
    fn of(stanza: &Element, now: u64) -> Self {
        let h = stanza
            .child("x", ns::MUC)
            .and_then(|x| x.child("history", ns::MUC));
        let num = |name: &str| {
            h.and_then(|h| h.attr(name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let seconds = num("seconds").map(|s| now.saturating_sub(s.saturating_mul(1000)));
        let since = h.and_then(|h| h.attr("since")).and_then(parse_stamp);
        HistoryWish {
            maxstanzas: num("maxstanzas").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            since: match (seconds, since) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            none: num("maxchars") == Some(0),
        }
    }
}

impl Hub {
    /// Presence to `room/nick`.
    pub(super) fn room_presence(
        &mut self,
        cx: &MucCx,
        room: BareJid,
        nick: String,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let current = self.muc.rooms.get(&room).and_then(|r| {
            r.by_session(cx.session)
                .map(|i| r.occupants[i].nick.clone())
        });
        match (stanza.attr("type"), current) {
            (None, None) => self.join(cx, room, nick, &stanza, out),
            (None, Some(old)) if old == nick => self.presence_update(cx, &room, &stanza, out),
            (None, Some(_)) => self.change_nick(cx, &room, nick, &stanza, out),
            (Some("unavailable"), Some(_)) => {
                let mut base = clean_presence(&stanza);
                base.set_attr("type", "unavailable");
                self.leave_room(&room, cx.session, base, out);
            }
            (Some("error"), Some(_)) => {
                self.leave_room(&room, cx.session, unavailable_base(), out);
            }
            _ => {}
        }
    }

    fn join(
        &mut self,
        cx: &MucCx,
        room_jid: BareJid,
        nick: String,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        if let Err(e) = check_nick(&nick) {
            return self.bounce(cx.session, stanza, e, out);
        }
        let user = cx.from.to_bare();
        let created = !self.muc.rooms.contains_key(&room_jid);
        if created {
            let mut r = Room::new(room_jid.clone());
            r.locked = true;
            r.set_affiliation(user.clone(), Affiliation::Owner);
            self.muc.rooms.insert(room_jid.clone(), r);
        }
        let Some(r) = self.muc.rooms.get(&room_jid) else {
            return;
        };
        if let Err(e) = admission(r, &user, &nick, stanza) {
            return self.bounce(cx.session, stanza, e, out);
        }
        let wish = HistoryWish::of(stanza, cx.now);
        let Some(r) = self.muc.rooms.get_mut(&room_jid) else {
            return;
        };
        let aff = r.affiliation(&user);
        let occ = Occupant {
            nick,
            jid: cx.from.clone(),
            session: cx.session,
            role: r.default_role(aff),
            presence: clean_presence(stanza),
        };
        for o in &r.occupants {
            deliver(out, cx.session, presence_for(r, o, &available(r, o), &occ));
        }
        r.occupants.push(occ.clone());
        let mut self_codes = vec![110];
        if r.config.whois_anyone {
            self_codes.push(100);
        }
        if created {
            self_codes.push(201);
        }
        let shown = Shown {
            self_codes: &self_codes,
            ..available(r, &occ)
        };
        broadcast(r, &occ, &shown, true, out);
        if !created && !wish.none {
            send_history(r, &occ, &wish, out);
        }
        deliver(out, cx.session, subject_message(r, &occ));
        self.muc
            .joined
            .entry(cx.session)
            .or_default()
            .insert(room_jid);
    }

    /// New presence from an occupant, broadcast to everyone.
    fn presence_update(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get_mut(room) else {
            return;
        };
        let Some(i) = r.by_session(cx.session) else {
            return;
        };
        r.occupants[i].presence = clean_presence(stanza);
        let occ = r.occupants[i].clone();
        broadcast(r, &occ, &available(r, &occ), true, out);
    }

    /// §7.6: unavailable with 303 and the new nick, then available.
    fn change_nick(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        nick: String,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        if let Err(e) = check_nick(&nick) {
            return self.bounce(cx.session, stanza, e, out);
        }
        let taken = self
            .muc
            .rooms
            .get(room)
            .is_some_and(|r| r.by_nick(&nick).is_some());
        if taken {
            return self.bounce(cx.session, stanza, conflict(), out);
        }
        let Some(r) = self.muc.rooms.get_mut(room) else {
            return;
        };
        let Some(i) = r.by_session(cx.session) else {
            return;
        };
        let old = r.occupants[i].clone();
        let gone = Shown {
            base: unavailable_base(),
            nick: Some(&nick),
            codes: &[303],
            self_codes: &[303, 110],
            ..available(r, &old)
        };
        broadcast(r, &old, &gone, true, out);
        r.occupants[i].nick = nick.clone();
        r.occupants[i].presence = clean_presence(stanza);
        let occ = r.occupants[i].clone();
        broadcast(r, &occ, &available(r, &occ), true, out);
    }

    /// The occupant of `session` leaves `room` (its own unavailable
    /// presence, or its session ended): the others and itself get
    /// unavailable presence; an empty temporary room is destroyed.
    pub(super) fn leave_room(
        &mut self,
        room: &BareJid,
        session: u64,
        base: Element,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get_mut(room) else {
            return;
        };
        let Some(i) = r.by_session(session) else {
            return;
        };
        let occ = r.occupants.remove(i);
        let shown = Shown {
            base,
            role: super::room::Role::None,
            ..available(r, &occ)
        };
        broadcast(r, &occ, &shown, false, out);
        deliver(out, session, presence_for(r, &occ, &shown, &occ));
        if let Some(set) = self.muc.joined.get_mut(&session) {
            set.remove(room);
            if set.is_empty() {
                self.muc.joined.remove(&session);
            }
        }
        self.drop_if_empty(room, out);
    }

    /// Destroys a temporary room nobody is in any more.
    pub(super) fn drop_if_empty(&mut self, room: &BareJid, out: &mut Vec<Output>) {
        let empty = self
            .muc
            .rooms
            .get(room)
            .is_some_and(|r| r.occupants.is_empty() && (!r.config.persistent || r.locked));
        if empty {
            self.forget_room(room, out);
        }
    }
}

/// The discussion history for a new occupant, with delay stamps.
fn send_history(r: &Room, occ: &Occupant, wish: &HistoryWish, out: &mut Vec<Output>) {
    let mut past: Vec<_> = r
        .history
        .iter()
        .filter(|p| wish.since.is_none_or(|s| p.at >= s))
        .collect();
    if let Some(max) = wish.maxstanzas {
        let skip = past.len().saturating_sub(max);
        past.drain(..skip);
    }
    for p in past {
        let mut m = p.stanza.clone();
        m.set_attr("to", occ.jid.to_string());
        m.push_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", r.jid.to_string())
                .with_attr("stamp", timestamp(p.at)),
        );
        deliver(out, occ.session, m);
    }
}

/// The subject message sent last on entering (§7.2.15), empty when unset.
fn subject_message(r: &Room, occ: &Occupant) -> Element {
    let (from, text) = match &r.subject {
        Some(s) if !s.nick.is_empty() => (r.occupant_jid(&s.nick), s.text.clone()),
        Some(s) => (r.jid.to_string(), s.text.clone()),
        None => (r.jid.to_string(), String::new()),
    };
    let mut subject = Element::new("subject", ns::CLIENT);
    if !text.is_empty() {
        subject = subject.with_text(text);
    }
    Element::new("message", ns::CLIENT)
        .with_attr("type", "groupchat")
        .with_attr("from", from)
        .with_attr("to", occ.jid.to_string())
        .with_child(subject)
}
