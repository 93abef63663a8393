//! Service discovery (XEP-0030) for the server and for accounts, and the
//! software version (XEP-0092).

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::iq::result_for;
use super::sessions::deliver;
use super::{Hub, Output, SessionId, StanzaError};
use crate::ns;

/// Flexible offline message retrieval's plain feature (XEP-0160 §4 / XEP-0013).
pub(super) const MSGOFFLINE: &str = "msgoffline";

/// The server's disco#info features, sorted.
pub(super) const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::ROSTER,
    ns::VERSION,
    MSGOFFLINE,
    ns::BLOCKING,
    ns::CARBONS,
    ns::PING,
    ns::VCARD,
];

/// An account's disco#info features.
const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS];

fn info(category: &str, kind: &str, name: Option<&str>, features: &[&str]) -> Element {
    let mut identity = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if let Some(name) = name {
        identity.set_attr("name", name);
    }
    let mut query = Element::new("query", ns::DISCO_INFO).with_child(identity);
    for f in features {
        query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    query
}

impl Hub {
    /// disco#info of the server: identity server/im and [`SERVER_FEATURES`].
    pub(super) fn disco_info_server(
        &self,
        session: SessionId,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        if query.attr("node").is_some() {
            self.bounce(session, stanza, StanzaError::item_not_found(), out);
            return;
        }
        let q = info(
            "server",
            "im",
            Some(&self.config.software_name),
            SERVER_FEATURES,
        );
        deliver(out, session, result_for(stanza).with_child(q));
    }

    /// disco#info of an account: identity account/registered.
    pub(super) fn disco_info_account(
        &self,
        session: SessionId,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        if query.attr("node").is_some() {
            self.bounce(session, stanza, StanzaError::item_not_found(), out);
            return;
        }
        let mut q = info("account", "registered", None, ACCOUNT_FEATURES);
        Hub::pep_disco_info(&mut q);
        if self.config.mam_max_messages > 0 {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::MAM));
        }
        deliver(out, session, result_for(stanza).with_child(q));
    }

    /// disco#items: nothing is hosted here (no components, no PEP nodes).
    pub(super) fn disco_items(
        &self,
        session: SessionId,
        stanza: &Element,
        query: &Element,
        out: &mut Vec<Output>,
    ) {
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        if let Some(node) = query.attr("node") {
            q.set_attr("node", node);
        } else {
            self.disco_items_list(stanza, &mut q);
        }
        deliver(out, session, result_for(stanza).with_child(q));
    }

    /// The items of the server (its services) or of an account (its PEP
    /// nodes the requester may see).
    fn disco_items_list(&self, stanza: &Element, q: &mut Element) {
        let target = stanza.attr("to").and_then(|t| BareJid::new(t).ok());
        match target.filter(|t| t.node().is_some()) {
            Some(account) => {
                let Some(requester) = stanza.attr("from").and_then(|f| Jid::new(f).ok()) else {
                    return;
                };
                for item in self.pep_disco_items(&account, &requester.to_bare()) {
                    q.push_child(item);
                }
            }
            None => {
                let services = self.pubsub.domain.iter().chain(&self.muc.domain);
                let services = services.chain(&self.config.disco_services);
                for jid in services {
                    q.push_child(
                        Element::new("item", ns::DISCO_ITEMS).with_attr("jid", jid.clone()),
                    );
                }
            }
        }
    }

    /// XEP-0092: name and version, no OS.
    pub(super) fn software_version(
        &self,
        session: SessionId,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) {
        let q = Element::new("query", ns::VERSION)
            .with_child(
                Element::new("name", ns::VERSION).with_text(self.config.software_name.clone()),
            )
            .with_child(
                Element::new("version", ns::VERSION)
                    .with_text(self.config.software_version.clone()),
            );
        deliver(out, session, result_for(stanza).with_child(q));
    }
}
