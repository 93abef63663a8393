//! Where a JID points: this server, a local account, or elsewhere.

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

use super::{Accounts, Hub, Output, SessionId, StanzaError};

/// The kind of address a stanza's `to` names, relative to this domain.
pub(super) enum Dest {
    /// The server itself: the bare domain, or `domain/resource`.
    Server {
        /// `domain/resource` rather than the bare domain.
        with_resource: bool,
    },
    /// A JID of a local account (which may or may not exist).
    Local {
        /// `user@domain`.
        bare: BareJid,
        /// `user@domain/resource` when a resource was given.
        full: Option<FullJid>,
    },
    /// Another domain; there is no federation.
    Remote,
}

/// The stanza's `to`, parsed and normalized; `Err` when present but invalid.
pub(super) fn parse_to(stanza: &Element) -> Result<Option<Jid>, ()> {
    match stanza.attr("to") {
        None => Ok(None),
        Some(to) => Jid::new(to).map(Some).map_err(|_| ()),
    }
}

/// The stanza's `type` attribute.
pub(super) fn stanza_type(stanza: &Element) -> Option<&str> {
    stanza.attr("type")
}

/// Whether the local account behind `bare` exists.
pub(super) fn account_exists(accounts: &dyn Accounts, bare: &BareJid) -> bool {
    bare.node().is_some_and(|n| accounts.exists(n.as_str()))
}

impl Hub {
    /// Classifies `jid` against this domain.
    pub(super) fn classify(&self, jid: &Jid) -> Dest {
        if jid.domain().as_str() != self.domain {
            return Dest::Remote;
        }
        if jid.node().is_none() {
            return Dest::Server {
                with_resource: jid.resource().is_some(),
            };
        }
        Dest::Local {
            bare: jid.to_bare(),
            full: jid.clone().try_into_full().ok(),
        }
    }

    /// The bare JID of local user `username`, if it is a valid localpart.
    pub(super) fn local_bare(&self, username: &str) -> Option<BareJid> {
        let node = jid::NodePart::new(username).ok()?;
        BareJid::new(&format!("{node}@{}", self.domain)).ok()
    }

    /// Sends `err` as a reply to `stanza` back to `session` (which sent it),
    /// unless the stanza is itself an error (RFC 6120 §8.3.1: no error loops).
    pub(super) fn bounce(
        &self,
        session: SessionId,
        stanza: &Element,
        err: StanzaError,
        out: &mut Vec<Output>,
    ) {
        if stanza_type(stanza) == Some("error") {
            return;
        }
        super::sessions::deliver(out, session, err.reply_to(stanza));
    }

    /// Sends `err` as a reply to `stanza` to whoever its `from` names, when
    /// that is a bound full JID (used where the sender is not a session
    /// argument, e.g. requeued stanzas). Dropped otherwise.
    pub(super) fn bounce_to_sender(
        &self,
        stanza: &Element,
        err: StanzaError,
        out: &mut Vec<Output>,
    ) {
        if stanza_type(stanza) == Some("error") {
            return;
        }
        let Some(from) = stanza.attr("from").and_then(|f| FullJid::new(f).ok()) else {
            return;
        };
        if let Some(&session) = self.by_jid.get(&from) {
            out.push(Output::Deliver {
                session,
                stanza: err.reply_to(stanza),
            });
        }
    }
}
