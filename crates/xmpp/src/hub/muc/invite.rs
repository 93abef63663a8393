//! Mediated invitations and their declines (XEP-0045 §7.8.2, §9.3).
//!
//! An occupant sends `<x xmlns='muc#user'><invite to='…'/></x>` in a
//! normal message to the room; the room sends the invitee
//! `<invite from='inviter@domain'/>` (with the reason, `<continue/>` and the
//! room password) from its own bare JID. In a members-only room only admins
//! and owners may invite, and members too when `muc#roomconfig_allowinvites`
//! is on; such an invitation adds the invitee to the member list (§9.3).
//! Anyone else gets `<forbidden/>`. A decline goes back through the room to
//! an inviter of the decliner, and to nobody else, so the room cannot be
//! used to send declines to arbitrary JIDs.

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::MucCx;
use super::room::Affiliation;
use crate::hub::addressing::{Dest, account_exists};
use crate::hub::message::Routing;
use crate::hub::{Hub, Output, StanzaError};
use crate::ns;

/// Pending invitations kept per room; beyond it the first invitee by JID
/// is forgotten.
const MAX_PENDING: usize = 1000;
/// Inviters remembered per invitee.
const MAX_INVITERS: usize = 8;

/// What a `muc#user` `<x/>` in a normal message to a room asks for.
pub(super) enum Mediated<'a> {
    /// `<invite to=…/>`, one or more.
    Invite(Vec<&'a Element>),
    /// `<decline to=…?/>`.
    Decline(&'a Element),
}

impl<'a> Mediated<'a> {
    /// The invitations or the decline in `stanza`, if it is one.
    pub(super) fn of(stanza: &'a Element) -> Option<Self> {
        if !matches!(stanza.attr("type"), None | Some("normal")) {
            return None;
        }
        let x = stanza.child("x", ns::MUC_USER)?;
        if let Some(decline) = x.child("decline", ns::MUC_USER) {
            return Some(Mediated::Decline(decline));
        }
        let invites: Vec<&Element> = x
            .elements()
            .filter(|e| e.is("invite", ns::MUC_USER))
            .collect();
        (!invites.is_empty()).then_some(Mediated::Invite(invites))
    }
}

/// The `<reason/>` and `<continue/>` children worth passing on.
fn passed_on(from: &Element) -> impl Iterator<Item = Element> + '_ {
    from.elements()
        .filter(|e| e.is("reason", ns::MUC_USER) || e.is("continue", ns::MUC_USER))
        .cloned()
}

/// `<message from=room to=… id=…><x xmlns='muc#user'>child</x></message>`.
fn from_room(room: &BareJid, to: &Jid, id: Option<&str>, x: Element) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", room.to_string())
        .with_attr("to", to.to_string());
    if let Some(id) = id {
        m.set_attr("id", id);
    }
    m.with_child(x)
}

impl Hub {
    /// An invitation or a decline sent to `room`.
    pub(super) fn room_mediated(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        stanza: &Element,
        what: Mediated<'_>,
        out: &mut Vec<Output>,
    ) {
        let result = match what {
            Mediated::Invite(invites) => self.invite(cx, room, stanza, &invites, out),
            Mediated::Decline(decline) => self.decline(cx, room, stanza, decline, out),
        };
        if let Err(e) = result {
            self.bounce(cx.session, stanza, e, out);
        }
    }

    /// §7.8.2: checks every invitee first, then sends the invitations.
    fn invite(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        stanza: &Element,
        invites: &[&Element],
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let r = self
            .muc
            .rooms
            .get(room)
            .ok_or_else(StanzaError::item_not_found)?;
        r.by_session(cx.session)
            .ok_or_else(|| StanzaError::not_acceptable().with_text("only occupants invite"))?;
        let inviter = cx.from.to_bare();
        let aff = r.affiliation(&inviter);
        let members_only = r.config.members_only;
        if members_only
            && aff < Affiliation::Admin
            && !(aff == Affiliation::Member && r.config.allow_invites)
        {
            return Err(StanzaError::forbidden()
                .with_text("only admins and owners invite others into this members-only room"));
        }
        let password = r.config.password.clone();
        let mut targets = Vec::with_capacity(invites.len());
        for invite in invites {
            let to = invite
                .attr("to")
                .ok_or_else(|| StanzaError::bad_request().with_text("<invite/> without 'to'"))?;
            let to = Jid::new(to).map_err(|_| StanzaError::jid_malformed())?;
            self.check_recipient(cx, room, &to)?;
            targets.push((to, *invite));
        }
        for (to, invite) in targets {
            let invitee = to.to_bare();
            if let Some(r) = self.muc.rooms.get_mut(room) {
                // §9.3: an invitation by someone who may edit the member list
                // of a members-only room makes the invitee a member.
                if members_only && r.affiliation(&invitee) == Affiliation::None {
                    r.set_affiliation(invitee.clone(), Affiliation::Member);
                }
                remember_invite(&mut r.invited, invitee, Jid::from(inviter.clone()));
            }
            let mut inv =
                Element::new("invite", ns::MUC_USER).with_attr("from", inviter.to_string());
            passed_on(invite).for_each(|c| inv.push_child(c));
            let mut x = Element::new("x", ns::MUC_USER).with_child(inv);
            if let Some(p) = &password {
                x.push_child(Element::new("password", ns::MUC_USER).with_text(p.clone()));
            }
            let m = from_room(room, &to, stanza.attr("id"), x);
            self.room_to_user(cx, &to, m, out);
        }
        if members_only {
            self.save_room(room, out);
        }
        Ok(())
    }

    /// §7.8.2: a decline goes to the inviter it names (or the last one),
    /// who must have invited the decliner.
    fn decline(
        &mut self,
        cx: &MucCx<'_>,
        room: &BareJid,
        stanza: &Element,
        decline: &Element,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let decliner = cx.from.to_bare();
        let named = match decline.attr("to") {
            Some(to) => Some(Jid::new(to).map_err(|_| StanzaError::jid_malformed())?),
            None => None,
        };
        let r = self
            .muc
            .rooms
            .get_mut(room)
            .ok_or_else(StanzaError::item_not_found)?;
        let inviters = r.invited.get(&decliner).cloned().unwrap_or_default();
        let inviter = match &named {
            Some(n) => inviters
                .iter()
                .find(|i| i.to_bare() == n.to_bare())
                .cloned(),
            None => inviters.last().cloned(),
        }
        .ok_or_else(|| {
            StanzaError::not_acceptable().with_text("no invitation from that JID to decline")
        })?;
        if let Some(list) = r.invited.get_mut(&decliner) {
            list.retain(|i| i.to_bare() != inviter.to_bare());
            if list.is_empty() {
                r.invited.remove(&decliner);
            }
        }
        let to = named.unwrap_or(inviter);
        let mut dec = Element::new("decline", ns::MUC_USER).with_attr("from", decliner.to_string());
        passed_on(decline).for_each(|c| dec.push_child(c));
        let x = Element::new("x", ns::MUC_USER).with_child(dec);
        let m = from_room(room, &to, stanza.attr("id"), x);
        self.room_to_user(cx, &to, m, out);
        Ok(())
    }

    /// Whether the room may send a message to `to`: an existing local
    /// account that does not block the room (`item-not-found` otherwise, as
    /// §7.8.2 asks for a JID that does not exist). JIDs of other domains
    /// are their servers' to check (`remote-server-not-found` without
    /// federation).
    fn check_recipient(&self, cx: &MucCx<'_>, room: &BareJid, to: &Jid) -> Result<(), StanzaError> {
        match self.classify(to) {
            Dest::Local { bare, .. } => {
                if !account_exists(cx.accounts, &bare)
                    || self.blocks(&bare, &Jid::from(room.clone()))
                {
                    return Err(StanzaError::item_not_found());
                }
                Ok(())
            }
            Dest::Server { .. } => Err(StanzaError::bad_request().with_text("not a user")),
            Dest::Remote if self.config.federation => Ok(()),
            Dest::Remote => Err(StanzaError::remote_server_not_found()),
        }
    }

    /// Sends a message from the room to a user's real JID, routed as any
    /// message to a local account (available resources, else offline), or
    /// to the user's server.
    fn room_to_user(&mut self, cx: &MucCx<'_>, to: &Jid, m: Element, out: &mut Vec<Output>) {
        match self.classify(to) {
            Dest::Local { bare, full } => {
                let routing = Routing {
                    sender_session: Some(cx.session),
                    now: cx.now,
                    carbons: false,
                };
                self.route_message(&routing, &bare, full.as_ref(), m, out);
            }
            Dest::Remote => self.send_remote(Some(cx.session), m, out),
            Dest::Server { .. } => {}
        }
    }
}

/// Remembers that `inviter` invited `invitee`, within the bounds.
fn remember_invite(
    invited: &mut std::collections::BTreeMap<BareJid, Vec<Jid>>,
    invitee: BareJid,
    inviter: Jid,
) {
    if !invited.contains_key(&invitee)
        && invited.len() >= MAX_PENDING
        && let Some(first) = invited.keys().next().cloned()
    {
        invited.remove(&first);
    }
    let list = invited.entry(invitee).or_default();
    list.retain(|i| *i != inviter);
    list.push(inviter);
    if list.len() > MAX_INVITERS {
        list.remove(0);
    }
}
