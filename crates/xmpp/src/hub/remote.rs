//! Federation: stanzas to and from other servers (RFC 6120 §10.4, RFC 6121).
//!
//! Stanzas for JIDs of other domains leave as [`Output::Remote`], `from`
//! already stamped; the IO layer sends them over a server-to-server stream
//! and, when the peer cannot be reached, hands them back to
//! [`Hub::remote_failed`]. Stanzas from other servers come in through
//! [`Hub::handle_remote_stanza`], after the stream layer has checked that
//! their `from` belongs to the authenticated peer domain.
//!
//! The subscription machine runs the local half only; the other half runs
//! on the peer, which answers with its own subscription stanzas. Presence is
//! broadcast to remote subscribers' bare JIDs (their server fans it out), and
//! remote contacts are probed at initial presence (RFC 6121 §4.3).

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::addressing::{Dest, account_exists, parse_to, stanza_type};
use super::message::{Routed, Routing};
use super::sessions::deliver;
use super::subscription::SubKind;
use super::{Accounts, Hub, Output, StanzaError};
use crate::ns;

impl Hub {
    /// Whether `domain` is another server's: not ours, nor one of our
    /// services (MUC, pubsub, bridges).
    pub(super) fn is_foreign_domain(&self, domain: &str) -> bool {
        domain != self.domain
            && !self.is_bridge_domain(domain)
            && !self.is_muc_domain(domain)
            && self.config.pubsub_domain.as_deref() != Some(domain)
    }

    /// Sends `stanza` to another server, or bounces it with
    /// `<remote-server-not-found/>` to `session` without federation.
    pub(super) fn send_remote(
        &self,
        session: Option<super::SessionId>,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        if self.config.federation {
            out.push(Output::Remote { stanza });
        } else if let Some(session) = session {
            self.bounce(
                session,
                &stanza,
                StanzaError::remote_server_not_found(),
                out,
            );
        }
    }

    /// A stanza the IO layer could not get to its server: the local sender
    /// gets it back with `condition` (`remote-server-not-found` or
    /// `remote-server-timeout`) when it came from a bound full JID.
    pub fn remote_failed(
        &mut self,
        stanza: &Element,
        condition: &'static str,
        out: &mut Vec<Output>,
    ) {
        let kind = if condition == "remote-server-timeout" {
            "wait"
        } else {
            "cancel"
        };
        self.bounce_to_sender(stanza, StanzaError::new(kind, condition), out);
    }

    /// Presence of one of `user`'s resources (`stanza`, `from` stamped) to
    /// the user's remote subscribers.
    pub(super) fn broadcast_remote(&self, user: &BareJid, stanza: &Element, out: &mut Vec<Output>) {
        if !self.config.federation {
            return;
        }
        for contact in self.subscribers(user) {
            if self.is_foreign_domain(contact.domain().as_str())
                && !self.blocks(user, &Jid::from(contact.clone()))
            {
                let mut s = stanza.clone();
                s.set_attr("to", contact.to_string());
                out.push(Output::Remote { stanza: s });
            }
        }
    }

    /// Probes of the remote contacts `user` is subscribed to (initial
    /// presence, RFC 6121 §4.3.1).
    pub(super) fn probe_remote_contacts(&self, user: &BareJid, out: &mut Vec<Output>) {
        if !self.config.federation {
            return;
        }
        for contact in self.subscriptions(user) {
            if self.is_foreign_domain(contact.domain().as_str()) {
                let probe = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "probe")
                    .with_attr("from", user.to_string())
                    .with_attr("to", contact.to_string());
                out.push(Output::Remote { stanza: probe });
            }
        }
    }

    /// The current presence of `owner`'s available resources to the remote
    /// `to` (a probe answer or a new subscription); unavailable from the
    /// bare JID when none is available.
    pub(super) fn presence_to_remote(&self, owner: &BareJid, to: &Jid, out: &mut Vec<Output>) {
        if !self.config.federation {
            return;
        }
        let mut sent = false;
        for s in self.available_sessions(owner) {
            if let Some(p) = self.sessions.get(&s).and_then(|x| x.presence.clone()) {
                let mut p = p;
                p.set_attr("to", to.to_string());
                out.push(Output::Remote { stanza: p });
                sent = true;
            }
        }
        if !sent {
            let unavailable = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", owner.to_string())
                .with_attr("to", to.to_string());
            out.push(Output::Remote {
                stanza: unavailable,
            });
        }
    }

    /// Unavailable presence from each of `owner`'s available resources to
    /// the remote `watcher` (a subscription was revoked).
    pub(super) fn unavailable_to_remote(
        &self,
        owner: &BareJid,
        watcher: &BareJid,
        out: &mut Vec<Output>,
    ) {
        if !self.config.federation {
            return;
        }
        for s in self.available_sessions(owner) {
            if let Some(from) = self.session_jid(s) {
                let p = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", from.to_string())
                    .with_attr("to", watcher.to_string());
                out.push(Output::Remote { stanza: p });
            }
        }
    }

    /// A stanza (`jabber:client`) from another server to one of our JIDs.
    /// Messages are routed as any message (available resources, offline
    /// storage); presence updates the subscription state machine, reaches
    /// subscribed resources, and probes are answered; IQs go to bound full
    /// JIDs, and IQs to the server or an account's bare JID are answered as
    /// a local user's would be (disco, vCard, PEP, ping). Stanzas to our MUC
    /// and pubsub services are served as a local user's (`remote_users`).
    pub fn handle_remote_stanza(
        &mut self,
        stanza: Element,
        accounts: &dyn Accounts,
        now_unix_ms: u64,
        out: &mut Vec<Output>,
    ) {
        if stanza.ns != ns::CLIENT || !self.config.federation {
            return;
        }
        let Some(from) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return;
        };
        if !self.is_foreign_domain(from.domain().as_str()) {
            return;
        }
        let Ok(Some(to)) = parse_to(&stanza) else {
            return;
        };
        let full_from = from.clone().try_into_full().ok();
        if self.is_muc_domain(to.domain().as_str()) || self.is_pubsub_service(&to) {
            let Some(full_from) = full_from else {
                self.bounce_remote(&stanza, StanzaError::service_unavailable(), out);
                return;
            };
            if self.is_muc_domain(to.domain().as_str()) {
                self.remote_to_muc(full_from, to, stanza, accounts, now_unix_ms, out);
            } else {
                self.remote_as_client(full_from, to, stanza, accounts, now_unix_ms, out);
            }
            return;
        }
        if !self.is_foreign_domain(to.domain().as_str()) && to.domain().as_str() != self.domain {
            self.bounce_remote(&stanza, StanzaError::service_unavailable(), out);
            return;
        }
        match self.classify(&to) {
            Dest::Remote => {}
            Dest::Server { with_resource } => match full_from {
                Some(f) if stanza.name == "iq" && !with_resource => {
                    self.remote_as_client(f, to, stanza, accounts, now_unix_ms, out)
                }
                _ => self.server_stanza_from_remote(&stanza, out),
            },
            Dest::Local { bare, full } => {
                if !account_exists(accounts, &bare) {
                    if stanza.name != "presence" {
                        self.bounce_remote(&stanza, StanzaError::service_unavailable(), out);
                    }
                    return;
                }
                if self.blocks(&bare, &from) {
                    if stanza.name != "presence" {
                        self.bounce_remote(&stanza, StanzaError::service_unavailable(), out);
                    }
                    return;
                }
                match stanza.name.as_str() {
                    "message" => {
                        let stanza = self.archive_remote_chat(
                            &from.to_bare(),
                            &bare,
                            stanza,
                            now_unix_ms,
                            false,
                            out,
                        );
                        let routing = Routing {
                            sender_session: None,
                            now: now_unix_ms,
                            carbons: true,
                        };
                        let routed =
                            self.route_message(&routing, &bare, full.as_ref(), stanza.clone(), out);
                        if routed == Routed::Bounced {
                            self.bounce_remote(&stanza, StanzaError::service_unavailable(), out);
                        }
                    }
                    "presence" => {
                        self.presence_from_remote(&from, &bare, full.as_ref(), stanza, out)
                    }
                    "iq" => match (full.as_ref(), full_from) {
                        (None, Some(f)) => {
                            self.remote_as_client(f, to, stanza, accounts, now_unix_ms, out)
                        }
                        _ => self.iq_from_remote(full.as_ref(), stanza, out),
                    },
                    _ => {}
                }
            }
        }
    }

    fn bounce_remote(&self, stanza: &Element, err: StanzaError, out: &mut Vec<Output>) {
        if stanza_type(stanza) != Some("error") {
            out.push(Output::Remote {
                stanza: err.reply_to(stanza),
            });
        }
    }

    fn server_stanza_from_remote(&self, stanza: &Element, out: &mut Vec<Output>) {
        if stanza.name != "iq" || !matches!(stanza_type(stanza), Some("get" | "set")) {
            return;
        }
        if stanza.attr("type") == Some("get") && stanza.child("ping", ns::PING).is_some() {
            let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
            if let Some(id) = stanza.attr("id") {
                reply.set_attr("id", id);
            }
            if let Some(to) = stanza.attr("to") {
                reply.set_attr("from", to);
            }
            if let Some(from) = stanza.attr("from") {
                reply.set_attr("to", from);
            }
            out.push(Output::Remote { stanza: reply });
            return;
        }
        self.bounce_remote(stanza, StanzaError::service_unavailable(), out);
    }

    fn iq_from_remote(&self, full: Option<&FullJid>, stanza: Element, out: &mut Vec<Output>) {
        let request = matches!(stanza_type(&stanza), Some("get" | "set"));
        match full.and_then(|f| self.session_by_jid(f)) {
            Some(session) => deliver(out, session, stanza),
            None if request => self.bounce_remote(&stanza, StanzaError::service_unavailable(), out),
            None => {}
        }
    }

    fn presence_from_remote(
        &mut self,
        from: &Jid,
        owner: &BareJid,
        full: Option<&FullJid>,
        mut stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let from_bare = from.to_bare();
        let ptype = stanza.attr("type").map(str::to_string);
        match ptype.as_deref() {
            None | Some("available") | Some("unavailable") => {
                if ptype.as_deref() == Some("available") {
                    stanza.remove_attr("type");
                }
                let targets = match full {
                    Some(full) => self.session_by_jid(full).into_iter().collect(),
                    None if self.sub_of(owner, &from_bare).has_to() => {
                        self.available_sessions(owner)
                    }
                    None => Vec::new(),
                };
                for s in targets {
                    if let Some(to) = self.session_jid(s) {
                        let mut p = stanza.clone();
                        p.set_attr("to", to.to_string());
                        deliver(out, s, p);
                    }
                }
            }
            Some("probe") => {
                if self.sub_of(owner, &from_bare).has_from() {
                    self.presence_to_remote(owner, from, out);
                }
            }
            Some("error") => {
                if let Some(s) = full.and_then(|f| self.session_by_jid(f)) {
                    deliver(out, s, stanza);
                }
            }
            Some(kind) => {
                let Some(kind) = SubKind::parse(kind) else {
                    return;
                };
                stanza.set_attr("from", from_bare.to_string());
                stanza.set_attr("to", owner.to_string());
                self.inbound_subscription(owner, &from_bare, kind, stanza, out);
            }
        }
    }
}
