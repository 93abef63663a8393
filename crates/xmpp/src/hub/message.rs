//! Message routing (RFC 6121 §8.5, §5) and the requeueing of messages a
//! dead session never acknowledged (XEP-0198).

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::addressing::{Dest, account_exists, stanza_type};
use super::sessions::deliver;
use super::{Accounts, Ctx, Hub, Output, SessionId, StanzaError, carbons};
use crate::ns;

/// The `type` of a message; absent or unknown is `normal` (RFC 6121 §5.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MsgType {
    /// `normal` (or none).
    Normal,
    /// One-to-one chat.
    Chat,
    /// Multi-user chat; no MUC service here.
    Groupchat,
    /// Alerts; never stored.
    Headline,
    /// An error reply.
    Error,
}

impl MsgType {
    /// The type of `message`.
    pub(super) fn of(message: &Element) -> Self {
        match message.attr("type") {
            Some("chat") => MsgType::Chat,
            Some("groupchat") => MsgType::Groupchat,
            Some("headline") => MsgType::Headline,
            Some("error") => MsgType::Error,
            _ => MsgType::Normal,
        }
    }
}

/// What became of a routed message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Routed {
    /// Delivered to these sessions.
    Delivered(Vec<SessionId>),
    /// Stored offline.
    Stored,
    /// Silently dropped.
    Dropped,
    /// Refused with an error to the sender.
    Bounced,
}

/// How to route: who to bounce errors to, the time for delay stamps, and
/// whether to send `received` carbons.
pub(super) struct Routing {
    /// The sending session when it is the origin; `None` bounces errors to
    /// the stanza's `from` instead.
    pub(super) sender_session: Option<SessionId>,
    /// The current time (delay stamps of stored messages).
    pub(super) now: u64,
    /// Send `received` carbons (off for requeued messages).
    pub(super) carbons: bool,
}

impl Hub {
    pub(super) fn message_from_client(
        &mut self,
        cx: &Ctx<'_>,
        to: Option<Jid>,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        // No 'to': the sender's own bare JID (RFC 6120 §10.3.1).
        let to = to.unwrap_or_else(|| Jid::from(cx.user.clone()));
        match self.classify(&to) {
            Dest::Remote => {
                if self.blocks(&cx.user, &to) {
                    self.bounce_blocked(cx.session, &stanza, out);
                    return;
                }
                if self.config.federation && carbons::eligible(&stanza, MsgType::of(&stanza)) {
                    self.sent_carbons(cx.session, &cx.user, &stanza, &[], out);
                }
                let stanza = if self.config.federation {
                    let peer = to.to_bare();
                    self.archive_remote_chat(&cx.user, &peer, stanza, cx.now, true, out)
                } else {
                    stanza
                };
                self.send_remote(Some(cx.session), stanza, out);
            }
            Dest::Server { .. } => {
                self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out)
            }
            Dest::Local { bare, full } => {
                if self.blocks(&cx.user, &to) {
                    self.bounce_blocked(cx.session, &stanza, out);
                    return;
                }
                if !account_exists(cx.accounts, &bare)
                    || self.blocks(&bare, &Jid::from(cx.from.clone()))
                {
                    self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out);
                    return;
                }
                let stanza = self.archive_chat(&cx.user, &bare, stanza, cx.now, out);
                let copy = carbons::eligible(&stanza, MsgType::of(&stanza));
                let routing = Routing {
                    sender_session: Some(cx.session),
                    now: cx.now,
                    carbons: true,
                };
                let routed =
                    self.route_message(&routing, &bare, full.as_ref(), stanza.clone(), out);
                match routed {
                    Routed::Delivered(got) if copy => {
                        self.sent_carbons(cx.session, &cx.user, &stanza, &got, out)
                    }
                    Routed::Stored if copy => {
                        self.sent_carbons(cx.session, &cx.user, &stanza, &[], out)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Routes a message to local user `bare` (at `full` when given), per
    /// RFC 6121 §8.5.2 and §8.5.3.
    pub(super) fn route_message(
        &mut self,
        routing: &Routing,
        bare: &BareJid,
        full: Option<&FullJid>,
        mut stanza: Element,
        out: &mut Vec<Output>,
    ) -> Routed {
        let mtype = MsgType::of(&stanza);
        let eligible = routing.carbons && carbons::eligible(&stanza, mtype);
        carbons::strip_private(&mut stanza);
        if let Some(full) = full {
            if let Some(target) = self.session_by_jid(full) {
                deliver(out, target, stanza.clone());
                if eligible {
                    let skip = [Some(target), routing.sender_session];
                    let skip: Vec<SessionId> = skip.into_iter().flatten().collect();
                    self.received_carbons(bare, &skip, &stanza, out);
                }
                return Routed::Delivered(vec![target]);
            }
            // No such resource (§8.5.3.2.1).
            match mtype {
                MsgType::Normal | MsgType::Chat => {}
                MsgType::Groupchat => {
                    return self.route_bounce(
                        routing,
                        &stanza,
                        StanzaError::service_unavailable(),
                        out,
                    );
                }
                MsgType::Headline | MsgType::Error => return Routed::Dropped,
            }
        }
        match mtype {
            MsgType::Error => Routed::Dropped,
            MsgType::Groupchat => {
                self.route_bounce(routing, &stanza, StanzaError::service_unavailable(), out)
            }
            MsgType::Headline => {
                let targets: Vec<SessionId> = self
                    .available_sessions(bare)
                    .into_iter()
                    .filter(|s| self.sessions.get(s).is_some_and(|x| x.priority >= 0))
                    .collect();
                if targets.is_empty() {
                    return Routed::Dropped;
                }
                for &t in &targets {
                    deliver(out, t, stanza.clone());
                }
                Routed::Delivered(targets)
            }
            MsgType::Normal | MsgType::Chat => {
                let targets = self.top_priority_sessions(bare);
                if targets.is_empty() {
                    return match self.store_offline(bare, stanza.clone(), routing.now, out) {
                        Ok(true) => Routed::Stored,
                        Ok(false) => Routed::Dropped,
                        Err(e) => self.route_bounce(routing, &stanza, e, out),
                    };
                }
                for &t in &targets {
                    deliver(out, t, stanza.clone());
                }
                if eligible {
                    let mut skip = targets.clone();
                    skip.extend(routing.sender_session);
                    self.received_carbons(bare, &skip, &stanza, out);
                }
                Routed::Delivered(targets)
            }
        }
    }

    fn route_bounce(
        &self,
        routing: &Routing,
        stanza: &Element,
        err: StanzaError,
        out: &mut Vec<Output>,
    ) -> Routed {
        match routing.sender_session {
            Some(s) => self.bounce(s, stanza, err, out),
            None => self.bounce_to_sender(stanza, err, out),
        }
        Routed::Bounced
    }

    /// Available resources with the highest non-negative priority (all of
    /// them when several share it), in bind order (§8.5.2.1.1).
    fn top_priority_sessions(&self, bare: &BareJid) -> Vec<SessionId> {
        let candidates: Vec<(SessionId, i8)> = self
            .available_sessions(bare)
            .into_iter()
            .filter_map(|s| self.sessions.get(&s).map(|x| (s, x.priority)))
            .filter(|&(_, p)| p >= 0)
            .collect();
        let Some(max) = candidates.iter().map(|&(_, p)| p).max() else {
            return Vec::new();
        };
        candidates
            .into_iter()
            .filter(|&(_, p)| p == max)
            .map(|(s, _)| s)
            .collect()
    }

    pub(super) fn requeue(
        &mut self,
        full_jid: &FullJid,
        stanzas: Vec<Element>,
        accounts: &dyn Accounts,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let bare = full_jid.to_bare();
        let exists = account_exists(accounts, &bare);
        for stanza in stanzas {
            if stanza.ns != ns::CLIENT {
                continue;
            }
            match stanza.name.as_str() {
                "message" => {
                    if carbons::is_carbon(&stanza) {
                        continue;
                    }
                    if !exists {
                        self.bounce_to_sender(&stanza, StanzaError::service_unavailable(), out);
                        continue;
                    }
                    let routing = Routing {
                        sender_session: None,
                        now,
                        carbons: false,
                    };
                    self.route_message(&routing, &bare, None, stanza, out);
                }
                "iq" if matches!(stanza_type(&stanza), Some("get" | "set")) => {
                    self.bounce_to_sender(&stanza, StanzaError::service_unavailable(), out);
                }
                _ => {}
            }
        }
    }
}
