//! The blocking command (XEP-0191): the blocklist, its IQs and pushes, the
//! JID matching rules, and the presence side effects of (un)blocking.

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::iq::result_for;
use super::persist::{BLOCKLIST_TABLE, blocklist_value};
use super::sessions::deliver;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Application error condition for stanzas to a blocked JID (XEP-0191 §3.5).
pub(super) const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// Whether blocklist `item` covers `jid` (the XEP-0016 §2.1 rules XEP-0191
/// refers to): a full JID matches only itself, a bare JID any of its
/// resources, `domain/resource` only itself, a domain everything in it.
pub(super) fn jid_matches(item: &Jid, jid: &Jid) -> bool {
    match (item.node(), item.resource()) {
        (Some(_), Some(_)) => item == jid,
        (Some(n), None) => jid.node() == Some(n) && jid.domain() == item.domain(),
        (None, Some(r)) => {
            jid.node().is_none() && jid.domain() == item.domain() && jid.resource() == Some(r)
        }
        (None, None) => jid.domain() == item.domain(),
    }
}

impl Hub {
    /// Whether `owner` blocks `jid`.
    pub(super) fn blocks(&self, owner: &BareJid, jid: &Jid) -> bool {
        self.blocklists
            .get(owner)
            .is_some_and(|l| l.iter().any(|i| jid_matches(i, jid)))
    }

    /// Refuses a stanza the user addressed to a JID they block:
    /// `<not-acceptable/>` with `<blocked xmlns='urn:xmpp:blocking:errors'/>`.
    pub(super) fn bounce_blocked(
        &self,
        session: SessionId,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        if stanza.attr("type") == Some("error") {
            return;
        }
        let mut reply = StanzaError::not_acceptable().reply_to(stanza);
        if let Some(error) = reply.child_mut("error", ns::CLIENT) {
            error.push_child(Element::new("blocked", BLOCKING_ERRORS));
        }
        deliver(out, session, reply);
    }

    /// `urn:xmpp:blocking` IQs on the user's own account.
    pub(super) fn blocking_iq(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        let result = match (stanza.attr("type"), payload.name.as_str()) {
            (Some("get"), "blocklist") => {
                self.blocklist_get(session, owner, stanza, out);
                Ok(())
            }
            (Some("set"), "block") => self.block(session, owner, stanza, payload, out),
            (Some("set"), "unblock") => self.unblock(session, owner, stanza, payload, out),
            _ => Err(StanzaError::bad_request()),
        };
        if let Err(e) = result {
            self.bounce(session, stanza, e, out);
        }
    }

    fn blocklist_get(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        if let Some(sess) = self.sessions.get_mut(&session) {
            sess.blocklist_requested = true;
        }
        let mut list = Element::new("blocklist", ns::BLOCKING);
        for jid in self.blocklists.get(owner).into_iter().flatten() {
            list.push_child(item(jid));
        }
        deliver(out, session, result_for(stanza).with_child(list));
    }

    fn block(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let jids = parse_items(payload)?;
        if jids.is_empty() {
            return Err(StanzaError::bad_request());
        }
        let list = self.blocklists.entry(owner.clone()).or_default();
        let mut added = Vec::new();
        for jid in jids {
            if !list.contains(&jid) {
                list.push(jid.clone());
                added.push(jid);
            }
        }
        self.save_blocklist(owner, out);
        deliver(out, session, result_for(stanza));
        let mut push = Element::new("block", ns::BLOCKING);
        for jid in &added {
            push.push_child(item(jid));
        }
        if !added.is_empty() {
            self.blocklist_push(owner, push, out);
        }
        for jid in &added {
            self.block_started(owner, jid, out);
        }
        Ok(())
    }

    fn unblock(
        &mut self,
        session: SessionId,
        owner: &BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) -> Result<(), StanzaError> {
        let jids = parse_items(payload)?;
        let list = self.blocklists.entry(owner.clone()).or_default();
        let removed: Vec<Jid> = if jids.is_empty() {
            std::mem::take(list)
        } else {
            let removed = list.iter().filter(|j| jids.contains(j)).cloned().collect();
            list.retain(|j| !jids.contains(j));
            removed
        };
        self.save_blocklist(owner, out);
        deliver(out, session, result_for(stanza));
        let mut push = Element::new("unblock", ns::BLOCKING);
        if !jids.is_empty() {
            for jid in &removed {
                push.push_child(item(jid));
            }
        }
        if !removed.is_empty() {
            self.blocklist_push(owner, push, out);
        }
        for jid in &removed {
            self.block_ended(owner, jid, out);
        }
        Ok(())
    }

    fn save_blocklist(&mut self, owner: &BareJid, out: &mut Vec<Output>) {
        let key = owner.to_string();
        match self.blocklists.get(owner) {
            Some(list) if !list.is_empty() => out.push(Output::Put {
                table: BLOCKLIST_TABLE,
                key,
                value: blocklist_value(list),
            }),
            _ => {
                self.blocklists.remove(owner);
                out.push(Output::Delete {
                    table: BLOCKLIST_TABLE,
                    key,
                });
            }
        }
    }

    /// Pushes a `<block/>` or `<unblock/>` to every resource of the user
    /// that retrieved the blocklist (XEP-0191 §3.3).
    fn blocklist_push(&mut self, owner: &BareJid, payload: Element, out: &mut Vec<Output>) {
        let targets: Vec<(SessionId, String)> = self
            .user_sessions(owner)
            .into_iter()
            .filter_map(|s| {
                let sess = self.sessions.get(&s)?;
                sess.blocklist_requested.then(|| (s, sess.jid.to_string()))
            })
            .collect();
        for (session, jid) in targets {
            let push = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", self.push_id())
                .with_attr("to", jid)
                .with_child(payload.clone());
            deliver(out, session, push);
        }
    }

    /// Available resources of other users matched by `item`, with their JIDs.
    fn matching_sessions(&self, owner: &BareJid, item: &Jid) -> Vec<FullJid> {
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|s| self.sessions.get(&s))
            .filter(|s| {
                s.is_available() && &s.bare != owner && jid_matches(item, &Jid::from(s.jid.clone()))
            })
            .map(|s| s.jid.clone())
            .collect()
    }

    /// Whether presence of `owner`'s session `from` reaches `to` (subscription or directed).
    fn sees_presence(&self, owner: &BareJid, from: &FullJid, to: &FullJid) -> bool {
        if self.sub_of(owner, &to.to_bare()).has_from() {
            return true;
        }
        self.session_by_jid(from)
            .and_then(|s| self.sessions.get(&s))
            .is_some_and(|s| {
                s.directed.iter().any(|d| {
                    d == &Jid::from(to.clone()) || (d.is_bare() && d.to_bare() == to.to_bare())
                })
            })
    }

    /// A block started: unavailable both ways between the user's resources
    /// and the newly blocked ones that could see each other.
    fn block_started(&mut self, owner: &BareJid, item: &Jid, out: &mut Vec<Output>) {
        let mine: Vec<FullJid> = self
            .available_sessions(owner)
            .into_iter()
            .filter_map(|s| self.session_jid(s))
            .collect();
        for other in self.matching_sessions(owner, item) {
            let other_bare = other.to_bare();
            for me in &mine {
                if self.sees_presence(owner, me, &other) {
                    self.send_unavailable(me, &other, out);
                }
                if self.sub_of(owner, &other_bare).has_to() {
                    self.send_unavailable(&other, me, out);
                }
            }
        }
    }

    /// A block ended: current presence both ways where the subscriptions
    /// (and the remaining blocks) allow it.
    fn block_ended(&mut self, owner: &BareJid, item: &Jid, out: &mut Vec<Output>) {
        let mine: Vec<FullJid> = self
            .available_sessions(owner)
            .into_iter()
            .filter_map(|s| self.session_jid(s))
            .collect();
        for other in self.matching_sessions(owner, item) {
            let other_bare = other.to_bare();
            for me in &mine {
                if self.sub_of(owner, &other_bare).has_from() {
                    self.send_current_presence(me, &other, out);
                }
                if self.sub_of(owner, &other_bare).has_to() {
                    self.send_current_presence(&other, me, out);
                }
            }
        }
    }
}

/// `<item jid='...'/>` in the blocking namespace.
fn item(jid: &Jid) -> Element {
    Element::new("item", ns::BLOCKING).with_attr("jid", jid.to_string())
}

/// The JIDs of a `<block/>`/`<unblock/>`; a bad one is `jid-malformed` (XEP-0191 §3.3).
fn parse_items(payload: &Element) -> Result<Vec<Jid>, StanzaError> {
    let mut jids = Vec::new();
    for item in payload.elements().filter(|e| e.is("item", ns::BLOCKING)) {
        let jid = item
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(StanzaError::jid_malformed)?;
        if !jids.contains(&jid) {
            jids.push(jid);
        }
    }
    Ok(jids)
}
