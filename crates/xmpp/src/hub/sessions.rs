//! Bound sessions: resource binding, conflicts, and lookups by user.

use std::hash::{BuildHasher, Hasher};

use jid::{BareJid, FullJid, Jid, ResourcePart};
use tributary_xmpp_xml::Element;

use super::{Hub, Output, SessionId, StanzaError};

/// What the hub remembers about one bound resource.
pub(super) struct Session {
    /// The bound full JID.
    pub(super) jid: FullJid,
    /// Its bare JID (the account).
    pub(super) bare: BareJid,
    /// The last available presence broadcast (from stamped, no `to`);
    /// `None` while the resource is not available (RFC 6121 §4.1).
    pub(super) presence: Option<Element>,
    /// Priority of that presence (RFC 6121 §4.7.2.3).
    pub(super) priority: i8,
    /// Requested the roster this session, so it gets roster pushes (RFC 6121 §2.1.6).
    pub(super) roster_requested: bool,
    /// Asked with a `ver` attribute, so results and pushes carry `ver` (RFC 6121 §2.6).
    pub(super) roster_versioning: bool,
    /// Retrieved the blocklist, so it gets blocklist pushes (XEP-0191 §3.3).
    pub(super) blocklist_requested: bool,
    /// Enabled message carbons (XEP-0280).
    pub(super) carbons: bool,
    /// Targets of directed available presence not yet cancelled (RFC 6121 §4.6).
    pub(super) directed: Vec<Jid>,
}

impl Session {
    fn new(jid: FullJid) -> Self {
        Session {
            bare: jid.to_bare(),
            jid,
            presence: None,
            priority: 0,
            roster_requested: false,
            roster_versioning: false,
            blocklist_requested: false,
            carbons: false,
            directed: Vec::new(),
        }
    }

    /// Whether the resource has sent available presence (and not since unavailable).
    pub(super) fn is_available(&self) -> bool {
        self.presence.is_some()
    }
}

impl Hub {
    pub(super) fn bind_session(
        &mut self,
        session: SessionId,
        username: &str,
        resource: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<FullJid, StanzaError> {
        if self.sessions.contains_key(&session) {
            return Err(StanzaError::not_allowed().with_text("already bound"));
        }
        let bare = self
            .local_bare(username)
            .ok_or_else(|| StanzaError::bad_request().with_text("invalid username"))?;
        let full = match resource {
            Some(r) => {
                let part = ResourcePart::new(r)
                    .map_err(|_| StanzaError::bad_request().with_text("invalid resource"))?;
                bare.with_resource(&part)
            }
            None => self.generate_resource(&bare),
        };
        if let Some(&old) = self.by_jid.get(&full) {
            out.push(Output::Close {
                session: old,
                condition: "conflict",
                text: Some("Replaced by new connection".to_string()),
            });
            self.unbind_session(old, out);
        }
        self.by_jid.insert(full.clone(), session);
        self.by_user.entry(bare).or_default().push(session);
        self.sessions.insert(session, Session::new(full.clone()));
        Ok(full)
    }

    /// A resource nobody else holds: `tributary-` and 16 hex digits from a
    /// per-process random hash of a counter (not guessable across restarts).
    fn generate_resource(&mut self, bare: &BareJid) -> FullJid {
        loop {
            self.resource_counter += 1;
            let mut h = self.resource_seed.build_hasher();
            h.write_u64(self.resource_counter);
            let resource = format!("tributary-{:016x}", h.finish());
            if let Ok(full) = bare.with_resource_str(&resource)
                && !self.by_jid.contains_key(&full)
            {
                return full;
            }
        }
    }

    pub(super) fn unbind_session(&mut self, session: SessionId, out: &mut Vec<Output>) {
        let Some(jid) = self.sessions.get(&session).map(|s| s.jid.clone()) else {
            return;
        };
        self.go_unavailable(session, None, false, out);
        self.pubsub_unbind(session);
        self.sessions.remove(&session);
        if self.by_jid.get(&jid) == Some(&session) {
            self.by_jid.remove(&jid);
        }
        let bare = jid.to_bare();
        if let Some(list) = self.by_user.get_mut(&bare) {
            list.retain(|&s| s != session);
            if list.is_empty() {
                self.by_user.remove(&bare);
            }
        }
    }

    /// Every bound session of a user, in bind order.
    pub(super) fn user_sessions(&self, bare: &BareJid) -> Vec<SessionId> {
        self.by_user.get(bare).cloned().unwrap_or_default()
    }

    /// The user's available sessions (sent available presence), in bind order.
    pub(super) fn available_sessions(&self, bare: &BareJid) -> Vec<SessionId> {
        self.user_sessions(bare)
            .into_iter()
            .filter(|s| self.sessions.get(s).is_some_and(Session::is_available))
            .collect()
    }

    /// The full JID of a bound session (cloned, for borrow-free use).
    pub(super) fn session_jid(&self, session: SessionId) -> Option<FullJid> {
        self.sessions.get(&session).map(|s| s.jid.clone())
    }

    /// The session bound to exactly this full JID.
    pub(super) fn session_by_jid(&self, jid: &FullJid) -> Option<SessionId> {
        self.by_jid.get(jid).copied()
    }
}

/// Queues a stanza for a session; for the session id of a remote JID (a
/// remote occupant of a room, a remote sender of an IQ) it goes to that
/// JID's server, its `to` already set.
pub(super) fn deliver(out: &mut Vec<Output>, session: SessionId, stanza: Element) {
    if super::remote_users::is_remote_session(session) {
        out.push(Output::Remote { stanza });
    } else {
        out.push(Output::Deliver { session, stanza });
    }
}
