//! Presence (RFC 6121 §4): broadcast of available and unavailable presence,
//! probes answered locally, directed presence, presence errors.

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::addressing::{Dest, account_exists};
use super::sessions::deliver;
use super::subscription::SubKind;
use super::{Ctx, Hub, Output, SessionId, StanzaError};
use crate::ns;

/// The priority of a presence stanza (RFC 6121 §4.7.2.3); absent or invalid is 0.
pub(super) fn parse_priority(presence: &Element) -> i8 {
    presence
        .child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse().ok())
        .unwrap_or(0)
}

/// `stanza` addressed to `to`.
fn addressed(stanza: &Element, to: &FullJid) -> Element {
    let mut s = stanza.clone();
    s.set_attr("to", to.to_string());
    s
}

/// A bare `<presence type='unavailable'/>` from `from`.
fn unavailable_from(from: &FullJid) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", from.to_string())
}

impl Hub {
    pub(super) fn presence_from_client(
        &mut self,
        cx: &Ctx<'_>,
        to: Option<Jid>,
        mut stanza: Element,
        out: &mut Vec<Output>,
    ) {
        if stanza.attr("type") == Some("available") {
            stanza.remove_attr("type");
        }
        let ptype = stanza.attr("type").map(str::to_string);
        match (ptype.as_deref(), to) {
            (None, None) => self.broadcast_available(cx.session, stanza, out),
            (Some("unavailable"), None) => self.go_unavailable(cx.session, Some(stanza), true, out),
            (None | Some("unavailable"), Some(to)) => self.directed_presence(cx, to, stanza, out),
            (Some(kind), Some(to)) if SubKind::parse(kind).is_some() => {
                if let Some(kind) = SubKind::parse(kind) {
                    self.subscription_from_client(cx, to, kind, stanza, out);
                }
            }
            (Some("probe"), Some(to)) => self.probe_from_client(cx, &to, out),
            (Some("error"), Some(to)) => self.presence_error(cx, to, stanza, out),
            (
                Some(
                    "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed" | "probe" | "error",
                ),
                None,
            ) => {}
            _ => self.bounce(cx.session, &stanza, StanzaError::bad_request(), out),
        }
    }

    /// Whether presence may flow from `from` to `to` (neither blocks the other).
    pub(super) fn presence_allowed(&self, from: &FullJid, to: &FullJid) -> bool {
        !self.blocks(&from.to_bare(), &Jid::from(to.clone()))
            && !self.blocks(&to.to_bare(), &Jid::from(from.clone()))
    }

    /// Initial or subsequent available presence (RFC 6121 §4.2, §4.4).
    fn broadcast_available(
        &mut self,
        session: SessionId,
        mut stanza: Element,
        out: &mut Vec<Output>,
    ) {
        stanza.remove_attr("to");
        let priority = parse_priority(&stanza);
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let initial = sess.presence.is_none();
        let was_negative = sess.priority < 0;
        sess.presence = Some(stanza.clone());
        sess.priority = priority;
        let jid = sess.jid.clone();
        let bare = sess.bare.clone();

        // The user's own available resources, the sender included (§4.2.2).
        for s in self.available_sessions(&bare) {
            if let Some(to) = self.session_jid(s) {
                deliver(out, s, addressed(&stanza, &to));
            }
        }
        // Contacts subscribed to the user.
        for contact in self.subscribers(&bare) {
            for s in self.available_sessions(&contact) {
                if let Some(to) = self.session_jid(s)
                    && self.presence_allowed(&jid, &to)
                {
                    deliver(out, s, addressed(&stanza, &to));
                }
            }
        }
        self.broadcast_remote(&bare, &stanza, out);
        if initial {
            // Probes of the contacts the user is subscribed to, answered
            // locally with each available resource's last presence (§4.3).
            for contact in self.subscriptions(&bare) {
                self.send_presences_of(&contact, None, &jid, session, out);
            }
            self.probe_remote_contacts(&bare, out);
            // The user's other resources.
            for s in self.available_sessions(&bare) {
                if s == session {
                    continue;
                }
                if let Some(p) = self.sessions.get(&s).and_then(|x| x.presence.clone()) {
                    deliver(out, session, addressed(&p, &jid));
                }
            }
            // Subscription requests still waiting for an answer (§3.1.3).
            let pending: Vec<Element> = self
                .rosters
                .get(&bare)
                .map(|r| r.pending.values().cloned().collect())
                .unwrap_or_default();
            for p in pending {
                deliver(out, session, p);
            }
        }
        if priority >= 0 && (initial || was_negative) {
            self.flush_offline(session, &bare, out);
        }
        self.pep_presence(session, &stanza, out);
    }

    /// Delivers the current presence of `owner`'s available resources (or
    /// only of `only`, a full JID) to `session` (whose JID is `to`), where
    /// neither side blocks the other.
    fn send_presences_of(
        &self,
        owner: &BareJid,
        only: Option<&FullJid>,
        to: &FullJid,
        session: SessionId,
        out: &mut Vec<Output>,
    ) {
        let sources = match only {
            Some(full) => self.session_by_jid(full).into_iter().collect(),
            None => self.available_sessions(owner),
        };
        for s in sources {
            let Some(sess) = self.sessions.get(&s) else {
                continue;
            };
            if let Some(p) = &sess.presence
                && self.presence_allowed(&sess.jid, to)
            {
                deliver(out, session, addressed(p, to));
            }
        }
    }

    /// The session goes unavailable: explicit unavailable presence
    /// (`stanza`, reflected to the sender when `reflect`), or the end of the
    /// session (`None`). Broadcast to the same audience as available presence
    /// plus the directed-presence targets (§4.5, §4.6.3).
    pub(super) fn go_unavailable(
        &mut self,
        session: SessionId,
        stanza: Option<Element>,
        reflect: bool,
        out: &mut Vec<Output>,
    ) {
        self.muc_session_gone(session, out);
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let was_available = sess.presence.take().is_some();
        let directed = std::mem::take(&mut sess.directed);
        let jid = sess.jid.clone();
        let bare = sess.bare.clone();
        let mut unavailable = stanza.unwrap_or_else(|| unavailable_from(&jid));
        unavailable.remove_attr("to");
        unavailable.set_attr("type", "unavailable");
        unavailable.set_attr("from", jid.to_string());

        let mut reached: Vec<SessionId> = Vec::new();
        if was_available {
            if reflect {
                deliver(out, session, addressed(&unavailable, &jid));
                reached.push(session);
            }
            for s in self.available_sessions(&bare) {
                if let Some(to) = self.session_jid(s) {
                    deliver(out, s, addressed(&unavailable, &to));
                    reached.push(s);
                }
            }
            for contact in self.subscribers(&bare) {
                for s in self.available_sessions(&contact) {
                    if let Some(to) = self.session_jid(s)
                        && self.presence_allowed(&jid, &to)
                    {
                        deliver(out, s, addressed(&unavailable, &to));
                        reached.push(s);
                    }
                }
            }
            self.broadcast_remote(&bare, &unavailable, out);
        }
        for target in directed {
            if self.is_foreign_domain(target.domain().as_str()) {
                if !self.sub_of(&bare, &target.to_bare()).has_from() || !was_available {
                    let mut st = unavailable.clone();
                    st.set_attr("to", target.to_string());
                    self.send_remote(None, st, out);
                }
                continue;
            }
            for s in self.presence_targets(&target) {
                if reached.contains(&s) || s == session {
                    continue;
                }
                if let Some(to) = self.session_jid(s)
                    && self.presence_allowed(&jid, &to)
                {
                    let mut st = unavailable.clone();
                    st.set_attr("to", target.to_string());
                    deliver(out, s, st);
                    reached.push(s);
                }
            }
        }
    }

    /// Where presence addressed to `target` goes: the bound session of a full
    /// JID, or every available resource of a bare JID.
    fn presence_targets(&self, target: &Jid) -> Vec<SessionId> {
        match self.classify(target) {
            Dest::Local {
                full: Some(full), ..
            } => self.session_by_jid(&full).into_iter().collect(),
            Dest::Local { bare, full: None } => self.available_sessions(&bare),
            _ => Vec::new(),
        }
    }

    /// Directed available or unavailable presence (RFC 6121 §4.6).
    fn directed_presence(&mut self, cx: &Ctx<'_>, to: Jid, stanza: Element, out: &mut Vec<Output>) {
        match self.classify(&to) {
            Dest::Remote => {
                if self.blocks(&cx.user, &to) {
                    self.bounce_blocked(cx.session, &stanza, out);
                    return;
                }
                if self.config.federation
                    && let Some(sess) = self.sessions.get_mut(&cx.session)
                {
                    if stanza.attr("type").is_none() {
                        if !sess.directed.contains(&to) {
                            sess.directed.push(to.clone());
                        }
                    } else {
                        sess.directed.retain(|d| d != &to);
                    }
                }
                self.send_remote(Some(cx.session), stanza, out);
            }
            Dest::Server { .. } => {}
            Dest::Local { bare, .. } => {
                if self.blocks(&cx.user, &to) {
                    self.bounce_blocked(cx.session, &stanza, out);
                    return;
                }
                if !account_exists(cx.accounts, &bare) {
                    return;
                }
                let available = stanza.attr("type").is_none();
                if let Some(sess) = self.sessions.get_mut(&cx.session) {
                    if available {
                        if !sess.directed.contains(&to) {
                            sess.directed.push(to.clone());
                        }
                    } else {
                        sess.directed
                            .retain(|d| d != &to && !(to.is_bare() && d.to_bare() == bare));
                    }
                }
                for s in self.presence_targets(&to) {
                    if let Some(target) = self.session_jid(s)
                        && self.presence_allowed(&cx.from, &target)
                    {
                        deliver(out, s, stanza.clone());
                    }
                }
            }
        }
    }

    /// A client's presence probe: answered for local contacts the user is
    /// subscribed to (or the user's own resources), ignored otherwise.
    fn probe_from_client(&mut self, cx: &Ctx<'_>, to: &Jid, out: &mut Vec<Output>) {
        let Dest::Local {
            bare: contact,
            full,
        } = self.classify(to)
        else {
            return;
        };
        if contact != cx.user && !self.sub_of(&cx.user, &contact).has_to() {
            return;
        }
        self.send_presences_of(&contact, full.as_ref(), &cx.from, cx.session, out);
    }

    /// Presence of type error: delivered to a bound full JID, dropped otherwise.
    fn presence_error(&mut self, cx: &Ctx<'_>, to: Jid, stanza: Element, out: &mut Vec<Output>) {
        let Ok(full) = to.try_into_full() else {
            return;
        };
        if let Some(s) = self.session_by_jid(&full)
            && self.presence_allowed(&cx.from, &full)
        {
            deliver(out, s, stanza);
        }
    }

    /// `owner` now lets `watcher` see its presence: send the current
    /// presence of each available resource to the watcher's resources.
    pub(super) fn presence_granted(
        &mut self,
        owner: &BareJid,
        watcher: &BareJid,
        out: &mut Vec<Output>,
    ) {
        if self.is_foreign_domain(watcher.domain().as_str()) {
            if !self.available_sessions(owner).is_empty() {
                self.presence_to_remote(owner, &Jid::from(watcher.clone()), out);
            }
            return;
        }
        for w in self.available_sessions(watcher) {
            if let Some(to) = self.session_jid(w) {
                self.send_presences_of(owner, None, &to, w, out);
            }
        }
    }

    /// `owner` no longer lets `watcher` see its presence: unavailable from
    /// each of the owner's available resources to the watcher's resources.
    pub(super) fn presence_revoked(
        &mut self,
        owner: &BareJid,
        watcher: &BareJid,
        out: &mut Vec<Output>,
    ) {
        if self.is_foreign_domain(watcher.domain().as_str()) {
            self.unavailable_to_remote(owner, watcher, out);
            return;
        }
        for w in self.available_sessions(watcher) {
            let Some(to) = self.session_jid(w) else {
                continue;
            };
            for s in self.available_sessions(owner) {
                if let Some(from) = self.session_jid(s)
                    && self.presence_allowed(&from, &to)
                {
                    deliver(out, w, addressed(&unavailable_from(&from), &to));
                }
            }
        }
    }

    /// Unavailable presence from `from` to `to`, regardless of blocking (used
    /// when a block starts: the last thing the other side sees).
    pub(super) fn send_unavailable(&self, from: &FullJid, to: &FullJid, out: &mut Vec<Output>) {
        if let Some(s) = self.session_by_jid(to) {
            deliver(out, s, addressed(&unavailable_from(from), to));
        }
    }

    /// The current presence of `from` to `to`, if `from` is available and
    /// the pair is not blocked (used when a block ends).
    pub(super) fn send_current_presence(
        &self,
        from: &FullJid,
        to: &FullJid,
        out: &mut Vec<Output>,
    ) {
        let (Some(src), Some(dst)) = (self.session_by_jid(from), self.session_by_jid(to)) else {
            return;
        };
        if let Some(p) = self.sessions.get(&src).and_then(|s| s.presence.as_ref())
            && self.presence_allowed(from, to)
        {
            deliver(out, dst, addressed(p, to));
        }
    }
}
