//! Message carbons (XEP-0280): enable/disable, and `sent`/`received`
//! copies to a user's other carbon-enabled resources.

use jid::{BareJid, FullJid};
use tributary_xmpp_xml::Element;

use super::iq::result_for;
use super::message::MsgType;
use super::sessions::deliver;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Whether a message is copied (XEP-0280 §6): chat, or normal with a body;
/// not when marked `<private/>` or `<no-copy/>` (XEP-0334), and never a
/// carbon itself.
pub(super) fn eligible(message: &Element, mtype: MsgType) -> bool {
    let by_type = match mtype {
        MsgType::Chat => true,
        MsgType::Normal => message.child("body", ns::CLIENT).is_some(),
        _ => false,
    };
    by_type
        && message.child("private", ns::CARBONS).is_none()
        && message.child("no-copy", ns::HINTS).is_none()
        && !is_carbon(message)
}

/// Whether this message is a carbon wrapper.
pub(super) fn is_carbon(message: &Element) -> bool {
    message.child("sent", ns::CARBONS).is_some() || message.child("received", ns::CARBONS).is_some()
}

/// Removes `<private/>` before the message goes out (XEP-0280 §7).
pub(super) fn strip_private(message: &mut Element) {
    message.remove_children("private", ns::CARBONS);
}

/// The wrapper: from the user's bare JID to one of its resources.
fn wrap(kind: &str, owner: &BareJid, to: &FullJid, original: &Element) -> Element {
    let mut m = Element::new("message", ns::CLIENT)
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_string());
    if let Some(t) = original.attr("type") {
        m.set_attr("type", t);
    }
    m.with_child(
        Element::new(kind, ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(original.clone())),
    )
}

impl Hub {
    /// `received` copies to the recipient's carbon-enabled resources that did
    /// not get the message itself (nor sent it, for a message between two
    /// resources of one account).
    pub(super) fn received_carbons(
        &self,
        owner: &BareJid,
        skip: &[SessionId],
        message: &Element,
        out: &mut Vec<Output>,
    ) {
        self.copies("received", owner, None, skip, message, out);
    }

    /// `sent` copies to the sender's other carbon-enabled resources (not the
    /// sending one, nor those that got the message itself).
    pub(super) fn sent_carbons(
        &self,
        sender: SessionId,
        owner: &BareJid,
        message: &Element,
        got_original: &[SessionId],
        out: &mut Vec<Output>,
    ) {
        let mut message = message.clone();
        strip_private(&mut message);
        self.copies("sent", owner, Some(sender), got_original, &message, out);
    }

    fn copies(
        &self,
        kind: &str,
        owner: &BareJid,
        skip: Option<SessionId>,
        got_original: &[SessionId],
        message: &Element,
        out: &mut Vec<Output>,
    ) {
        for s in self.user_sessions(owner) {
            if Some(s) == skip || got_original.contains(&s) {
                continue;
            }
            if let Some(sess) = self.sessions.get(&s)
                && sess.carbons
            {
                deliver(out, s, wrap(kind, owner, &sess.jid, message));
            }
        }
    }

    /// `<enable/>` / `<disable/>` (iq set).
    pub(super) fn carbons_iq(
        &mut self,
        session: SessionId,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        if stanza.attr("type") != Some("set") {
            self.bounce(session, stanza, StanzaError::bad_request(), out);
            return;
        }
        if let Some(sess) = self.sessions.get_mut(&session) {
            sess.carbons = payload.name == "enable";
        }
        deliver(out, session, result_for(stanza));
    }
}
