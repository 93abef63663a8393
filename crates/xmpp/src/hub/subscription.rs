//! The presence subscription state machine (RFC 6121 §3 and Appendix A).
//!
//! Every contact is local, so one call runs both halves: the sender's
//! server ("outbound", Appendix A.2.1 and A.3.1) and the recipient's server
//! ("inbound", A.2.2 and A.3.2). Each half updates its owner's roster, writes
//! it, pushes the item when the visible state changed, and delivers the
//! stanza to the recipient's available resources when its state changed.

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::addressing::{Dest, account_exists};
use super::roster::MAX_ITEMS;
use super::sessions::deliver;
use super::{Ctx, Hub, Output, StanzaError};
use crate::ns;

/// The four subscription presence types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubKind {
    /// Request to see the recipient's presence.
    Subscribe,
    /// Approval of a request (or a pre-approval).
    Subscribed,
    /// The sender stops seeing the recipient's presence.
    Unsubscribe,
    /// The recipient stops seeing the sender's presence (revoke or deny).
    Unsubscribed,
}

impl SubKind {
    /// From a presence `type`.
    pub(super) fn parse(t: &str) -> Option<Self> {
        Some(match t {
            "subscribe" => SubKind::Subscribe,
            "subscribed" => SubKind::Subscribed,
            "unsubscribe" => SubKind::Unsubscribe,
            "unsubscribed" => SubKind::Unsubscribed,
            _ => return None,
        })
    }

    /// The presence `type`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// A server-generated subscription stanza between two bare JIDs.
pub(super) fn subscription_stanza(from: &BareJid, to: &BareJid, kind: SubKind) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind.as_str())
        .with_attr("from", from.to_string())
        .with_attr("to", to.to_string())
}

impl Hub {
    /// A subscription stanza from a client (RFC 6121 §3): stamped with the
    /// user's bare JID, addressed to the contact's bare JID.
    pub(super) fn subscription_from_client(
        &mut self,
        cx: &Ctx<'_>,
        to: Jid,
        kind: SubKind,
        mut stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let dest = match self.classify(&to) {
            // A remote contact: the local half here, the peer runs its own.
            Dest::Remote if self.config.federation => Dest::Local {
                bare: to.to_bare(),
                full: None,
            },
            dest => dest,
        };
        match dest {
            Dest::Remote => self.bounce(
                cx.session,
                &stanza,
                StanzaError::remote_server_not_found(),
                out,
            ),
            Dest::Server { .. } => {}
            Dest::Local { bare: contact, .. } => {
                if contact == cx.user {
                    return;
                }
                if self.blocks(&cx.user, &Jid::from(contact.clone())) {
                    self.bounce_blocked(cx.session, &stanza, out);
                    return;
                }
                let creates_item = matches!(kind, SubKind::Subscribe | SubKind::Subscribed)
                    && self.item(&cx.user, &contact).is_none();
                let full = self
                    .rosters
                    .get(&cx.user)
                    .is_some_and(|r| r.items.len() >= MAX_ITEMS);
                if creates_item && full {
                    let err = StanzaError::not_allowed().with_text("roster is full");
                    self.bounce(cx.session, &stanza, err, out);
                    return;
                }
                stanza.set_attr("from", cx.user.to_string());
                stanza.set_attr("to", contact.to_string());
                let exists = self.is_foreign_domain(contact.domain().as_str())
                    || (contact.domain().as_str() == self.domain
                        && account_exists(cx.accounts, &contact));
                self.outbound_subscription(&cx.user.clone(), &contact, kind, stanza, exists, out);
            }
        }
    }

    /// The user's server handling a subscription stanza the user sends
    /// (Appendix A.2.1, A.3.1), then handing it to the contact's side.
    pub(super) fn outbound_subscription(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        kind: SubKind,
        stanza: Element,
        contact_exists: bool,
        out: &mut Vec<Output>,
    ) {
        match kind {
            SubKind::Subscribe => {
                let roster = self.rosters.entry(user.clone()).or_default();
                let created = !roster.items.contains_key(contact);
                let item = roster.items.entry(contact.clone()).or_default();
                let mut changed = created;
                if !item.sub.has_to() && !item.ask {
                    item.ask = true;
                    changed = true;
                }
                if changed {
                    self.roster_touched(user, out);
                    self.push_item(user, contact, out);
                }
                self.route_subscription(contact, user, kind, stanza, contact_exists, out);
            }
            SubKind::Subscribed => {
                let roster = self.rosters.entry(user.clone()).or_default();
                let sub = roster.items.get(contact).map(|i| i.sub).unwrap_or_default();
                let had_pending = roster.pending.remove(contact).is_some();
                if sub.has_from() {
                    // Already approved: nothing to route (a stale pending request is dropped).
                    if had_pending {
                        self.save_roster(user, out);
                    }
                    return;
                }
                let item = roster.items.entry(contact.clone()).or_default();
                if had_pending {
                    item.sub = item.sub.with_from(true);
                    item.approved = false;
                    self.roster_touched(user, out);
                    self.push_item(user, contact, out);
                    self.route_subscription(contact, user, kind, stanza, contact_exists, out);
                    self.presence_granted(user, contact, out);
                } else if !item.approved {
                    // Pre-approval (§3.4): remembered, not routed.
                    item.approved = true;
                    self.roster_touched(user, out);
                    self.push_item(user, contact, out);
                }
            }
            SubKind::Unsubscribe => {
                let changed = match self
                    .rosters
                    .get_mut(user)
                    .and_then(|r| r.items.get_mut(contact))
                {
                    Some(item) if item.sub.has_to() || item.ask => {
                        item.sub = item.sub.with_to(false);
                        item.ask = false;
                        true
                    }
                    _ => false,
                };
                if changed {
                    self.roster_touched(user, out);
                    self.push_item(user, contact, out);
                }
                self.route_subscription(contact, user, kind, stanza, contact_exists, out);
            }
            SubKind::Unsubscribed => {
                let (mut item_changed, mut pending_changed, mut lost_from) = (false, false, false);
                if let Some(r) = self.rosters.get_mut(user) {
                    pending_changed = r.pending.remove(contact).is_some();
                    if let Some(item) = r.items.get_mut(contact) {
                        if item.approved {
                            item.approved = false;
                            item_changed = true;
                        }
                        if item.sub.has_from() {
                            item.sub = item.sub.with_from(false);
                            lost_from = true;
                            item_changed = true;
                        }
                    }
                }
                if item_changed {
                    self.roster_touched(user, out);
                    self.push_item(user, contact, out);
                } else if pending_changed {
                    self.save_roster(user, out);
                }
                self.route_subscription(contact, user, kind, stanza, contact_exists, out);
                if lost_from {
                    self.presence_revoked(user, contact, out);
                }
            }
        }
    }

    /// The contact's server handling a subscription stanza from `from` to
    /// `owner` (Appendix A.2.2, A.3.2). `owner` must be an existing account
    /// for `Subscribe`; the other kinds only touch existing state.
    pub(super) fn inbound_subscription(
        &mut self,
        owner: &BareJid,
        from: &BareJid,
        kind: SubKind,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let blocked = self.blocks(owner, &Jid::from(from.clone()));
        match kind {
            SubKind::Subscribe => {
                if blocked {
                    return;
                }
                let roster = self.rosters.entry(owner.clone()).or_default();
                let item = roster.items.get(from);
                let sub = item.map(|i| i.sub).unwrap_or_default();
                let approved = item.is_some_and(|i| i.approved);
                if sub.has_from() {
                    // Already subscribed: auto-reply (§3.1.3), and the presence.
                    let reply = subscription_stanza(owner, from, SubKind::Subscribed);
                    self.route_subscription(from, owner, SubKind::Subscribed, reply, true, out);
                    self.presence_granted(owner, from, out);
                } else if approved {
                    // Pre-approved (§3.4): approve without asking the owner.
                    roster.pending.remove(from);
                    if let Some(item) = roster.items.get_mut(from) {
                        item.sub = item.sub.with_from(true);
                        item.approved = false;
                    }
                    self.roster_touched(owner, out);
                    self.push_item(owner, from, out);
                    let reply = subscription_stanza(owner, from, SubKind::Subscribed);
                    self.route_subscription(from, owner, SubKind::Subscribed, reply, true, out);
                    self.presence_granted(owner, from, out);
                } else if !roster.pending.contains_key(from) {
                    roster.pending.insert(from.clone(), stanza.clone());
                    self.save_roster(owner, out);
                    self.deliver_to_available(owner, &stanza, out);
                }
            }
            SubKind::Subscribed => {
                let changed = match self
                    .rosters
                    .get_mut(owner)
                    .and_then(|r| r.items.get_mut(from))
                {
                    Some(item) if item.ask => {
                        item.ask = false;
                        item.sub = item.sub.with_to(true);
                        true
                    }
                    _ => false,
                };
                if changed {
                    self.roster_touched(owner, out);
                    self.push_item(owner, from, out);
                    if !blocked {
                        self.deliver_to_available(owner, &stanza, out);
                    }
                }
            }
            SubKind::Unsubscribe => {
                let (mut item_changed, mut pending_changed) = (false, false);
                if let Some(r) = self.rosters.get_mut(owner) {
                    pending_changed = r.pending.remove(from).is_some();
                    if let Some(item) = r.items.get_mut(from)
                        && item.sub.has_from()
                    {
                        item.sub = item.sub.with_from(false);
                        item_changed = true;
                    }
                }
                if item_changed {
                    self.roster_touched(owner, out);
                    self.push_item(owner, from, out);
                } else if pending_changed {
                    self.save_roster(owner, out);
                }
                if (item_changed || pending_changed) && !blocked {
                    self.deliver_to_available(owner, &stanza, out);
                }
                if item_changed {
                    self.presence_revoked(owner, from, out);
                }
            }
            SubKind::Unsubscribed => {
                let changed = match self
                    .rosters
                    .get_mut(owner)
                    .and_then(|r| r.items.get_mut(from))
                {
                    Some(item) if item.ask || item.sub.has_to() => {
                        item.ask = false;
                        item.sub = item.sub.with_to(false);
                        true
                    }
                    _ => false,
                };
                if changed {
                    self.roster_touched(owner, out);
                    self.push_item(owner, from, out);
                    if !blocked {
                        self.deliver_to_available(owner, &stanza, out);
                    }
                }
            }
        }
    }

    /// Hands a subscription stanza from `from` to `to`'s side: another
    /// server (federation), or the local inbound half when `to` exists.
    pub(super) fn route_subscription(
        &mut self,
        to: &BareJid,
        from: &BareJid,
        kind: SubKind,
        stanza: Element,
        to_exists: bool,
        out: &mut Vec<Output>,
    ) {
        if self.is_foreign_domain(to.domain().as_str()) {
            self.send_remote(None, stanza, out);
        } else if to_exists {
            self.inbound_subscription(to, from, kind, stanza, out);
        }
    }

    /// Delivers a stanza to every available resource of `owner`.
    fn deliver_to_available(&self, owner: &BareJid, stanza: &Element, out: &mut Vec<Output>) {
        for s in self.available_sessions(owner) {
            deliver(out, s, stanza.clone());
        }
    }
}
