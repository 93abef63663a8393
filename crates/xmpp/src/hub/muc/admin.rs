//! Moderator and admin use cases (XEP-0045 §8, §9): kick, voice,
//! moderator role, bans and the member/admin/owner lists.

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::room::{Affiliation, Role};
use super::{MucCx, Shown, available, broadcast, conflict, item, presence_for};
use crate::hub::iq::result_for;
use crate::hub::sessions::deliver;
use crate::hub::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// `cancel`/`not-allowed`.
fn not_allowed(text: &str) -> StanzaError {
    StanzaError::not_allowed().with_text(text)
}

/// The `<actor/>` and `<reason/>` children of an item.
fn actor_and_reason(actor_nick: &str, reason: Option<String>) -> Vec<Element> {
    let mut extra = vec![Element::new("actor", ns::MUC_USER).with_attr("nick", actor_nick)];
    if let Some(reason) = reason {
        extra.push(Element::new("reason", ns::MUC_USER).with_text(reason));
    }
    extra
}

impl Hub {
    /// `muc#admin` get (lists) and set (role and affiliation changes).
    pub(super) fn muc_admin(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        stanza: &Element,
        query: &Element,
        get: bool,
        out: &mut Vec<Output>,
    ) {
        let items: Vec<Element> = query
            .elements()
            .filter(|e| e.name == "item")
            .cloned()
            .collect();
        if items.is_empty() {
            return self.bounce(cx.session, stanza, StanzaError::bad_request(), out);
        }
        let result = if get {
            self.admin_list(cx, room, &items[0])
        } else {
            items
                .iter()
                .try_for_each(|it| self.admin_change(cx, room, it, out))
                .map(|()| Element::new("query", ns::MUC_ADMIN))
        };
        match result {
            Ok(q) => {
                let mut r = result_for(stanza);
                if get {
                    r.push_child(q);
                }
                deliver(out, cx.session, r);
            }
            Err(e) => self.bounce(cx.session, stanza, e, out),
        }
    }

    /// The actor's affiliation, role and nick (role `none` when absent).
    fn actor(&self, cx: &MucCx, room: &BareJid) -> (Affiliation, Role, String) {
        let Some(r) = self.muc.rooms.get(room) else {
            return (Affiliation::None, Role::None, String::new());
        };
        let aff = r.affiliation(&cx.from.to_bare());
        match r.by_session(cx.session) {
            Some(i) => (aff, r.occupants[i].role, r.occupants[i].nick.clone()),
            None => (aff, Role::None, String::new()),
        }
    }

    /// An affiliation list (admins) or a role list (moderators).
    fn admin_list(
        &self,
        cx: &MucCx,
        room: &BareJid,
        wanted: &Element,
    ) -> Result<Element, StanzaError> {
        let (aff, role, _) = self.actor(cx, room);
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let mut q = Element::new("query", ns::MUC_ADMIN);
        if let Some(a) = wanted.attr("affiliation") {
            let a = Affiliation::parse(a).ok_or_else(StanzaError::bad_request)?;
            if aff < Affiliation::Admin {
                return Err(StanzaError::forbidden());
            }
            for (jid, has) in &r.affiliations {
                if *has == a {
                    let mut it = Element::new("item", ns::MUC_ADMIN)
                        .with_attr("affiliation", a.as_str())
                        .with_attr("jid", jid.to_string());
                    if let Some(o) = r.occupants.iter().find(|o| o.jid.to_bare() == *jid) {
                        it.set_attr("nick", o.nick.clone());
                    }
                    q.push_child(it);
                }
            }
        } else if let Some(w) = wanted.attr("role") {
            let w = Role::parse(w).ok_or_else(StanzaError::bad_request)?;
            if role < Role::Moderator {
                return Err(StanzaError::forbidden());
            }
            for o in r.occupants.iter().filter(|o| o.role == w) {
                let jid = o.jid.to_string();
                q.push_child(item(
                    ns::MUC_ADMIN,
                    r.affiliation(&o.jid.to_bare()),
                    o.role,
                    Some(&jid),
                    Some(&o.nick),
                ));
            }
        } else {
            return Err(StanzaError::bad_request());
        }
        Ok(q)
    }

    /// One `<item/>` of a `muc#admin` set.
    fn admin_change(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        it: &Element,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let reason = it.child("reason", ns::MUC_ADMIN).map(|r| r.text());
        if let (Some(nick), Some(role)) = (it.attr("nick"), it.attr("role")) {
            let role = Role::parse(role).ok_or_else(StanzaError::bad_request)?;
            return self.change_role(cx, room, nick, role, reason, out);
        }
        if let (Some(jid), Some(aff)) = (it.attr("jid"), it.attr("affiliation")) {
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let jid = Jid::new(jid)
                .map_err(|_| StanzaError::jid_malformed())?
                .to_bare();
            return self.change_affiliation(cx, room, jid, aff, reason, out);
        }
        if let (Some(nick), Some(aff)) = (it.attr("nick"), it.attr("affiliation")) {
            let aff = Affiliation::parse(aff).ok_or_else(StanzaError::bad_request)?;
            let r = self
                .muc
                .rooms
                .get(room)
                .ok_or_else(StanzaError::item_not_found)?;
            let i = r.by_nick(nick).ok_or_else(StanzaError::item_not_found)?;
            let jid = r.occupants[i].jid.to_bare();
            return self.change_affiliation(cx, room, jid, aff, reason, out);
        }
        Err(StanzaError::bad_request())
    }

    /// Kick (role none), voice (participant/visitor), moderator (§8.2-§8.5, §9.6).
    pub(super) fn change_role(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        nick: &str,
        role: Role,
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let (actor_aff, actor_role, actor_nick) = self.actor(cx, room);
        if actor_role < Role::Moderator {
            return Err(StanzaError::forbidden());
        }
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let i = r.by_nick(nick).ok_or_else(StanzaError::item_not_found)?;
        let target = &r.occupants[i];
        let target_aff = r.affiliation(&target.jid.to_bare());
        if (role == Role::Moderator || target.role == Role::Moderator)
            && actor_aff < Affiliation::Admin
        {
            return Err(StanzaError::forbidden());
        }
        if role < Role::Moderator && (target_aff >= Affiliation::Admin || target_aff > actor_aff) {
            return Err(not_allowed("that occupant's affiliation is too high"));
        }
        let extra = actor_and_reason(&actor_nick, reason);
        if role == Role::None {
            let session = target.session;
            self.expel(room, session, None, &[307], extra, out);
            return Ok(());
        }
        let Some(r) = self.muc.rooms.get_mut(room) else {
            return Ok(());
        };
        r.occupants[i].role = role;
        let occ = r.occupants[i].clone();
        let shown = Shown {
            extra,
            ..available(r, &occ)
        };
        broadcast(r, &occ, &shown, true, out);
        Ok(())
    }

    /// Ban, membership, admin and owner changes (§9.1-§9.8, §10.6-§10.9).
    fn change_affiliation(
        &mut self,
        cx: &MucCx,
        room: &BareJid,
        jid: BareJid,
        aff: Affiliation,
        reason: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let (actor_aff, _, actor_nick) = self.actor(cx, room);
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let current = r.affiliation(&jid);
        let owner_only = aff >= Affiliation::Admin || current >= Affiliation::Admin;
        if actor_aff < Affiliation::Admin || (owner_only && actor_aff < Affiliation::Owner) {
            return Err(StanzaError::forbidden());
        }
        if current == Affiliation::Owner
            && aff != Affiliation::Owner
            && r.affiliations
                .values()
                .filter(|a| **a == Affiliation::Owner)
                .count()
                == 1
        {
            return Err(conflict().with_text("a room needs an owner"));
        }
        let members_only = r.config.members_only;
        let sessions: Vec<SessionId> = r
            .occupants
            .iter()
            .filter(|o| o.jid.to_bare() == jid)
            .map(|o| o.session)
            .collect();
        if let Some(r) = self.muc.rooms.get_mut(room) {
            r.set_affiliation(jid.clone(), aff);
        }
        self.save_room(room, out);
        let extra = actor_and_reason(&actor_nick, reason);
        for session in sessions {
            if aff == Affiliation::Outcast {
                self.expel(room, session, Some(aff), &[301], extra.clone(), out);
            } else if members_only && aff < Affiliation::Member {
                self.expel(room, session, Some(aff), &[321], extra.clone(), out);
            } else if let Some(r) = self.muc.rooms.get_mut(room)
                && let Some(i) = r.by_session(session)
            {
                let now = r.occupants[i].role;
                r.occupants[i].role = match aff {
                    Affiliation::Owner | Affiliation::Admin => Role::Moderator,
                    Affiliation::Member if now < Role::Participant => Role::Participant,
                    _ if now == Role::Moderator => r.default_role(aff),
                    _ => now,
                };
                let occ = r.occupants[i].clone();
                let shown = Shown {
                    extra: extra.clone(),
                    ..available(r, &occ)
                };
                broadcast(r, &occ, &shown, true, out);
            }
        }
        Ok(())
    }

    /// Removes the occupant of `session` with status `codes` (307 kicked,
    /// 301 banned, 321 membership lost), telling it and everyone else.
    pub(super) fn expel(
        &mut self,
        room: &BareJid,
        session: SessionId,
        aff: Option<Affiliation>,
        codes: &[u16],
        extra: Vec<Element>,
        out: &mut Vec<Output>,
    ) {
        let Some(r) = self.muc.rooms.get_mut(room) else {
            return;
        };
        let Some(i) = r.by_session(session) else {
            return;
        };
        let occ = r.occupants.remove(i);
        let base = available(r, &occ);
        let mut self_codes = codes.to_vec();
        self_codes.push(110);
        let shown = Shown {
            base: super::unavailable_base(),
            aff: aff.unwrap_or(base.aff),
            role: Role::None,
            extra,
            codes,
            self_codes: &self_codes,
            nick: None,
        };
        deliver(out, session, presence_for(r, &occ, &shown, &occ));
        broadcast(r, &occ, &shown, false, out);
        if let Some(set) = self.muc.joined.get_mut(&session) {
            set.remove(room);
        }
        self.drop_if_empty(room, out);
    }
}
