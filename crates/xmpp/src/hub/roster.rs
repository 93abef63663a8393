//! Rosters (RFC 6121 §2): the data, `jabber:iq:roster` get/set with
//! versioning (§2.6), and roster pushes to interested resources.

use std::collections::BTreeMap;

use jid::{BareJid, Jid};
use serde::{Deserialize, Serialize};
use tributary_xmpp_xml::Element;

use super::iq::result_for;
use super::sessions::deliver;
use super::subscription::SubKind;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Longest accepted item name or group name, in bytes.
const MAX_NAME_LEN: usize = 1023;
/// Most items in one roster.
pub(super) const MAX_ITEMS: usize = 5000;

/// The `subscription` attribute: who sees whose presence (RFC 6121 §2.1.2.5).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub(super) enum Sub {
    /// Neither.
    #[default]
    None,
    /// The user sees the contact's presence.
    To,
    /// The contact sees the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Sub {
    /// The user is subscribed to the contact's presence.
    pub(super) fn has_to(self) -> bool {
        matches!(self, Sub::To | Sub::Both)
    }

    /// The contact is subscribed to the user's presence.
    pub(super) fn has_from(self) -> bool {
        matches!(self, Sub::From | Sub::Both)
    }

    fn of(to: bool, from: bool) -> Sub {
        match (to, from) {
            (false, false) => Sub::None,
            (true, false) => Sub::To,
            (false, true) => Sub::From,
            (true, true) => Sub::Both,
        }
    }

    /// With the `to` half set or cleared.
    pub(super) fn with_to(self, to: bool) -> Sub {
        Sub::of(to, self.has_from())
    }

    /// With the `from` half set or cleared.
    pub(super) fn with_from(self, from: bool) -> Sub {
        Sub::of(self.has_to(), from)
    }

    fn as_str(self) -> &'static str {
        match self {
            Sub::None => "none",
            Sub::To => "to",
            Sub::From => "from",
            Sub::Both => "both",
        }
    }
}

/// One roster item, keyed by the contact's bare JID.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(super) struct Item {
    /// Handle chosen by the user.
    pub(super) name: Option<String>,
    /// Groups, in the order the client gave them.
    pub(super) groups: Vec<String>,
    /// Subscription state.
    pub(super) sub: Sub,
    /// Pending out: the user asked to see the contact's presence (`ask='subscribe'`).
    pub(super) ask: bool,
    /// Pre-approved subscription request (RFC 6121 §3.4, `approved='true'`).
    pub(super) approved: bool,
}

/// A user's roster: items, inbound subscription requests not yet answered
/// (the "pending in" half of RFC 6121 Appendix A, kept apart from the items
/// as Prosody does, with the stanza to redeliver), and the version counter.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Roster {
    /// Bumped on every visible change (RFC 6121 §2.6).
    pub(super) ver: u64,
    /// Items by contact.
    pub(super) items: BTreeMap<BareJid, Item>,
    /// Pending inbound requests by requester: the `subscribe` as delivered.
    pub(super) pending: BTreeMap<BareJid, Element>,
}

/// The `<item/>` for a roster result or push.
pub(super) fn item_element(jid: &BareJid, item: &Item) -> Element {
    let mut el = Element::new("item", ns::ROSTER).with_attr("jid", jid.to_string());
    if let Some(name) = &item.name {
        el.set_attr("name", name.clone());
    }
    el.set_attr("subscription", item.sub.as_str());
    if item.ask {
        el.set_attr("ask", "subscribe");
    }
    if item.approved {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
    }
    el
}

impl Hub {
    /// The user's item for `contact`, if any.
    pub(super) fn item(&self, owner: &BareJid, contact: &BareJid) -> Option<&Item> {
        self.rosters.get(owner).and_then(|r| r.items.get(contact))
    }

    /// The subscription state the user has with `contact` (`None` without an item).
    pub(super) fn sub_of(&self, owner: &BareJid, contact: &BareJid) -> Sub {
        self.item(owner, contact).map(|i| i.sub).unwrap_or_default()
    }

    /// Contacts that receive the user's presence (`from`/`both`).
    pub(super) fn subscribers(&self, owner: &BareJid) -> Vec<BareJid> {
        self.rosters
            .get(owner)
            .map(|r| {
                r.items
                    .iter()
                    .filter(|(_, i)| i.sub.has_from())
                    .map(|(j, _)| j.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Contacts whose presence the user receives (`to`/`both`).
    pub(super) fn subscriptions(&self, owner: &BareJid) -> Vec<BareJid> {
        self.rosters
            .get(owner)
            .map(|r| {
                r.items
                    .iter()
                    .filter(|(_, i)| i.sub.has_to())
                    .map(|(j, _)| j.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// After a visible change of the user's roster: bump the version and write the row.
    pub(super) fn roster_touched(&mut self, owner: &BareJid, out: &mut Vec<Output>) {
        if let Some(r) = self.rosters.get_mut(owner) {
            r.ver += 1;
        }
        self.save_roster(owner, out);
    }

    /// Roster push of the current state of `contact` (or `subscription='remove'`)
    /// to every resource of the owner that requested the roster (RFC 6121 §2.1.6).
    pub(super) fn push_item(&mut self, owner: &BareJid, contact: &BareJid, out: &mut Vec<Output>) {
        let (ver, item) = match self.rosters.get(owner) {
            Some(r) => (
                r.ver,
                r.items.get(contact).map(|i| item_element(contact, i)),
            ),
            None => (0, None),
        };
        let item = item.unwrap_or_else(|| {
            Element::new("item", ns::ROSTER)
                .with_attr("jid", contact.to_string())
                .with_attr("subscription", "remove")
        });
        let targets: Vec<(SessionId, String, bool)> = self
            .user_sessions(owner)
            .into_iter()
            .filter_map(|s| {
                let sess = self.sessions.get(&s)?;
                sess.roster_requested
                    .then(|| (s, sess.jid.to_string(), sess.roster_versioning))
            })
            .collect();
        for (session, jid, versioning) in targets {
            let mut query = Element::new("query", ns::ROSTER);
            if versioning {
                query.set_attr("ver", ver.to_string());
            }
            query.push_child(item.clone());
            let push = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", self.push_id())
                .with_attr("to", jid)
                .with_child(query);
            deliver(out, session, push);
        }
    }

    /// `jabber:iq:roster` addressed to the user's own account.
    pub(super) fn roster_iq(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        match stanza.attr("type") {
            Some("get") => self.roster_get(session, owner, stanza, query, out),
            Some("set") => {
                if let Err(e) = self.roster_set(session, owner, stanza, query, out) {
                    self.bounce(session, stanza, e, out);
                }
            }
            _ => self.bounce(session, stanza, StanzaError::bad_request(), out),
        }
    }

    fn roster_get(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        let client_ver = query.attr("ver");
        if let Some(sess) = self.sessions.get_mut(&session) {
            sess.roster_requested = true;
            if client_ver.is_some() {
                sess.roster_versioning = true;
            }
        }
        let ver = self
            .rosters
            .get(owner)
            .map(|r| r.ver)
            .unwrap_or(0)
            .to_string();
        let mut result = result_for(stanza);
        if client_ver != Some(ver.as_str()) {
            let mut q = Element::new("query", ns::ROSTER);
            if client_ver.is_some() {
                q.set_attr("ver", ver);
            }
            if let Some(r) = self.rosters.get(owner) {
                for (jid, item) in &r.items {
                    q.push_child(item_element(jid, item));
                }
            }
            result.push_child(q);
        }
        deliver(out, session, result);
    }

    fn roster_set(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let mut items = query.elements();
        let (Some(item), None) = (items.next(), items.next()) else {
            return Err(StanzaError::bad_request());
        };
        if !item.is("item", ns::ROSTER) {
            return Err(StanzaError::bad_request());
        }
        let jid = item
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .and_then(|j| j.try_into_full().err())
            .ok_or_else(|| StanzaError::bad_request().with_text("item needs a bare JID"))?;
        if &jid == owner {
            return Err(StanzaError::not_allowed().with_text("cannot add yourself"));
        }
        if item.attr("subscription") == Some("remove") {
            return self.roster_remove(session, owner, stanza, &jid, out);
        }
        let name = item
            .attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN) {
            return Err(StanzaError::not_acceptable().with_text("name too long"));
        }
        let mut groups: Vec<String> = Vec::new();
        for g in item.elements().filter(|e| e.is("group", ns::ROSTER)) {
            let g = g.text();
            if g.is_empty() || g.len() > MAX_NAME_LEN {
                return Err(StanzaError::not_acceptable().with_text("bad group name"));
            }
            if groups.contains(&g) {
                return Err(StanzaError::bad_request().with_text("duplicate group"));
            }
            groups.push(g);
        }
        let roster = self.rosters.entry(owner.clone()).or_default();
        if !roster.items.contains_key(&jid) && roster.items.len() >= MAX_ITEMS {
            return Err(StanzaError::not_allowed().with_text("roster is full"));
        }
        let entry = roster.items.entry(jid.clone()).or_default();
        entry.name = name;
        entry.groups = groups;
        self.roster_touched(owner, out);
        deliver(out, session, result_for(stanza));
        self.push_item(owner, &jid, out);
        Ok(())
    }

    /// Item removal (RFC 6121 §2.5): cancels the subscriptions both ways.
    fn roster_remove(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        contact: &BareJid,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let Some(roster) = self.rosters.get_mut(owner) else {
            return Err(StanzaError::item_not_found());
        };
        let Some(old) = roster.items.remove(contact) else {
            return Err(StanzaError::item_not_found());
        };
        let had_pending = roster.pending.remove(contact).is_some();
        self.roster_touched(owner, out);
        deliver(out, session, result_for(stanza));
        self.push_item(owner, contact, out);
        self.cancel_subscriptions(owner, contact, &old, had_pending, out);
        Ok(())
    }

    /// Tells the contact that `owner` dropped them: `unsubscribed` if they
    /// had (or asked for) a subscription to the owner, `unsubscribe` if the
    /// owner had (or asked for) one to them (RFC 6121 §2.5.2).
    pub(super) fn cancel_subscriptions(
        &mut self,
        owner: &BareJid,
        contact: &BareJid,
        old: &Item,
        had_pending: bool,
        out: &mut Vec<Output>,
    ) {
        if !matches!(
            self.classify(&Jid::from(contact.clone())),
            super::addressing::Dest::Local { .. }
        ) {
            return;
        }
        if old.sub.has_from() || had_pending {
            let st =
                super::subscription::subscription_stanza(owner, contact, SubKind::Unsubscribed);
            self.inbound_subscription(contact, owner, SubKind::Unsubscribed, st, out);
        }
        if old.sub.has_from() {
            self.presence_revoked(owner, contact, out);
        }
        if old.sub.has_to() || old.ask {
            let st = super::subscription::subscription_stanza(owner, contact, SubKind::Unsubscribe);
            self.inbound_subscription(contact, owner, SubKind::Unsubscribe, st, out);
        }
    }
}
