//! Users of other servers in our services: MUC rooms, pubsub nodes and the
//! server-side IQs (disco, vCard, PEP) of our accounts.
//!
//! A remote full JID that talks to one of our services gets a *remote
//! session*: an id from [`REMOTE_SESSION_BASE`] up, which the MUC and pubsub
//! code use as they use a local session (room occupants, the sender of an
//! IQ). Whatever the hub delivers to such an id leaves as
//! [`Output::Remote`] (see `sessions::deliver`), its `to` already the remote
//! JID, so the services need no federation code of their own. The id lives
//! as long as the JID is in a room.

use std::collections::HashMap;

use jid::{FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::muc::MucCx;
use super::{Accounts, Ctx, Hub, SessionId};
use crate::hub::Output;

/// The first id of a remote session; local session ids (chosen by the IO
/// layer) stay below it.
pub const REMOTE_SESSION_BASE: SessionId = 1 << 62;

/// Whether `session` stands for a remote JID.
pub(super) fn is_remote_session(session: SessionId) -> bool {
    session >= REMOTE_SESSION_BASE
}

/// The remote JIDs that currently have a session id.
#[derive(Default)]
pub(super) struct RemoteSessions {
    by_jid: HashMap<FullJid, SessionId>,
    by_id: HashMap<SessionId, FullJid>,
    next: u64,
}

impl RemoteSessions {
    /// The id of `jid`, made on first use.
    fn id(&mut self, jid: &FullJid) -> SessionId {
        if let Some(&id) = self.by_jid.get(jid) {
            return id;
        }
        let id = REMOTE_SESSION_BASE + self.next;
        self.next += 1;
        self.by_jid.insert(jid.clone(), id);
        self.by_id.insert(id, jid.clone());
        id
    }

    fn forget(&mut self, id: SessionId) {
        if let Some(jid) = self.by_id.remove(&id) {
            self.by_jid.remove(&jid);
        }
    }

    /// How many remote JIDs have an id.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

impl Hub {
    /// A stanza from the remote `from` to our MUC service.
    pub(super) fn remote_to_muc(
        &mut self,
        from: FullJid,
        to: Jid,
        stanza: Element,
        accounts: &dyn Accounts,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let session = self.remote_sessions.id(&from);
        let cx = MucCx {
            session,
            from,
            now,
            accounts,
        };
        self.muc_stanza(&cx, to, stanza, out);
        self.forget_idle_remote(session);
    }

    /// A stanza from the remote `from` to our pubsub service, or an IQ to
    /// our server or one of our accounts (disco, vCard, PEP): handled as a
    /// local user's, without what only an account's own sessions may do.
    pub(super) fn remote_as_client(
        &mut self,
        from: FullJid,
        to: Jid,
        stanza: Element,
        accounts: &dyn Accounts,
        now: u64,
        out: &mut Vec<Output>,
    ) {
        let session = self.remote_sessions.id(&from);
        let cx = Ctx {
            session,
            user: from.to_bare(),
            from,
            accounts,
            now,
        };
        if self.is_pubsub_service(&to) {
            self.pubsub_component_stanza(&cx, stanza, out);
        } else if stanza.name == "iq" {
            self.iq_from_client(&cx, Some(to), stanza, out);
        }
        self.forget_idle_remote(session);
    }

    /// Drops the id of a remote JID that is in no room.
    fn forget_idle_remote(&mut self, session: SessionId) {
        if self.muc.joined.get(&session).is_none_or(|r| r.is_empty()) {
            self.muc.joined.remove(&session);
            self.pubsub_unbind(session);
            self.remote_sessions.forget(session);
        }
    }
}
