//! vcard-temp (XEP-0054): one vCard per account, public to read, set by
//! its owner only.

use jid::BareJid;
use tributary_xmpp_xml::{Element, Node};

use super::iq::result_for;
use super::persist::{VCARD_TABLE, vcard_value};
use super::sessions::deliver;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Largest vCard accepted, measured as serialized XML (approximately).
pub(super) const MAX_VCARD_BYTES: usize = 64 * 1024;

/// An upper-bound estimate of an element's XML size (iterative).
pub(super) fn approx_xml_len(root: &Element) -> usize {
    let mut total = 0usize;
    let mut stack = vec![root];
    while let Some(el) = stack.pop() {
        // <name xmlns='ns'> ... </name>
        total += 2 * el.name.len() + el.ns.len() + 14;
        for a in &el.attrs {
            total += a.name.len() + a.value.len() + a.ns.as_ref().map_or(0, |n| n.len()) + 4;
        }
        for child in &el.children {
            match child {
                Node::Element(e) => stack.push(e),
                Node::Text(t) => total += t.len(),
            }
        }
    }
    total
}

impl Hub {
    /// `<vCard xmlns='vcard-temp'/>` get (anyone's) or set (`own` only).
    pub(super) fn vcard_iq(
        &mut self,
        session: SessionId,
        subject: &BareJid,
        own: bool,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        match stanza.attr("type") {
            Some("get") => {
                let vcard = self
                    .vcards
                    .get(subject)
                    .cloned()
                    .unwrap_or_else(|| Element::new("vCard", ns::VCARD));
                deliver(out, session, result_for(stanza).with_child(vcard));
            }
            Some("set") if own => {
                if approx_xml_len(payload) > MAX_VCARD_BYTES {
                    let err = StanzaError::not_acceptable().with_text("vCard too large");
                    self.bounce(session, stanza, err, out);
                    return;
                }
                let key = subject.to_string();
                if payload.children.is_empty() {
                    self.vcards.remove(subject);
                    out.push(Output::Delete {
                        table: VCARD_TABLE,
                        key,
                    });
                } else {
                    out.push(Output::Put {
                        table: VCARD_TABLE,
                        key,
                        value: vcard_value(payload),
                    });
                    self.vcards.insert(subject.clone(), payload.clone());
                }
                deliver(out, session, result_for(stanza));
            }
            Some("set") => self.bounce(session, stanza, StanzaError::forbidden(), out),
            _ => self.bounce(session, stanza, StanzaError::bad_request(), out),
        }
    }
}
