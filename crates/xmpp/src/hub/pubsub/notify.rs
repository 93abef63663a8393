//! Event notifications (XEP-0060 §7.1.2, XEP-0163 §4.3): who gets them,
//! and the last published item on subscription and on presence.

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::super::sessions::deliver;
use super::super::{Output, SessionId};
use super::Service;
use super::node::{AccessModel, Affiliation, Item, Node, SendLast};
use crate::hub::Hub;
use crate::ns;

/// The `<item/>` of a notification (payload only when the node delivers them).
fn event_item(node: &Node, item: &Item) -> Element {
    let mut el = Element::new("item", ns::PUBSUB_EVENT)
        .with_attr("id", item.id.clone())
        .with_attr("publisher", item.publisher.clone());
    if node.config.deliver_payloads
        && let Some(p) = &item.payload
    {
        el.push_child(p.clone());
    }
    el
}

impl Hub {
    /// The sessions a subscription JID reaches: that full JID's session, or
    /// every available resource of a bare JID.
    fn sessions_of_subscriber(&self, jid: &str) -> Vec<SessionId> {
        let Ok(jid) = Jid::new(jid) else {
            return Vec::new();
        };
        match jid.try_into_full() {
            Ok(full) => self.session_by_jid(&full).into_iter().collect(),
            Err(bare) => self.available_sessions(&bare),
        }
    }

    /// Whether `contact` receives `owner`'s PEP notifications implicitly
    /// under the node's access model.
    fn pep_audience(&self, owner: &BareJid, node: &Node, contact: &BareJid) -> bool {
        if contact == owner {
            return true;
        }
        if self.blocks(owner, &Jid::from(contact.clone()))
            || self.blocks(contact, &Jid::from(owner.clone()))
        {
            return false;
        }
        match node.config.access_model {
            AccessModel::Whitelist => node.affiliation(contact) >= Affiliation::Member,
            _ => self.ps_may_access(node, contact).is_ok(),
        }
    }

    /// Every session that gets a notification from node `name`: explicit
    /// subscribers, and for PEP the interested (`+notify`) resources of the
    /// owner and of the contacts subscribed to the owner's presence.
    pub(super) fn ps_recipients(&self, svc: &Service, name: &str) -> Vec<SessionId> {
        let Some(node) = self.pubsub.node(svc, name) else {
            return Vec::new();
        };
        let mut to: Vec<SessionId> = Vec::new();
        for s in &node.subscriptions {
            for session in self.sessions_of_subscriber(&s.jid) {
                if !to.contains(&session) {
                    to.push(session);
                }
            }
        }
        if let Service::Pep(owner) = svc {
            let mut audience = vec![owner.clone()];
            audience.extend(self.subscribers(owner));
            for contact in audience {
                if !self.pep_audience(owner, node, &contact) {
                    continue;
                }
                for session in self.available_sessions(&contact) {
                    if !to.contains(&session) && self.pubsub.caps.wants(session, name) {
                        to.push(session);
                    }
                }
            }
        }
        to
    }

    /// The JIDs of other servers that get a notification from node `name`:
    /// remote subscribers, and for PEP the owner's remote contacts allowed
    /// by the access model (their bare JIDs: their server fans out).
    fn ps_remote_recipients(&self, svc: &Service, name: &str) -> Vec<Jid> {
        let Some(node) = self.pubsub.node(svc, name) else {
            return Vec::new();
        };
        if !self.config.federation {
            return Vec::new();
        }
        let mut to: Vec<Jid> = Vec::new();
        for s in &node.subscriptions {
            if let Ok(jid) = Jid::new(&s.jid)
                && self.is_foreign_domain(jid.domain().as_str())
                && !to.contains(&jid)
            {
                to.push(jid);
            }
        }
        if let Service::Pep(owner) = svc {
            for contact in self.subscribers(owner) {
                let jid = Jid::from(contact.clone());
                if self.is_foreign_domain(contact.domain().as_str())
                    && self.pep_audience(owner, node, &contact)
                    && !to.contains(&jid)
                {
                    to.push(jid);
                }
            }
        }
        to
    }

    /// `<message from=service to=… type=headline><event>{child}</event></message>`.
    fn event_message(&mut self, svc: &Service, to: &str, child: Element) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", svc.jid())
            .with_attr("to", to)
            .with_attr("type", "headline")
            .with_attr("id", self.pubsub.fresh_id())
            .with_child(Element::new("event", ns::PUBSUB_EVENT).with_child(child))
    }

    /// Sends `child` (`<items/>`, `<delete/>`, `<purge/>`) to every recipient.
    pub(super) fn notify_event(
        &mut self,
        svc: &Service,
        name: &str,
        child: Element,
        notes: &mut Vec<Output>,
    ) {
        for session in self.ps_recipients(svc, name) {
            if let Some(to) = self.session_jid(session) {
                let msg = self.event_message(svc, to.as_str(), child.clone());
                deliver(notes, session, msg);
            }
        }
        for jid in self.ps_remote_recipients(svc, name) {
            let stanza = self.event_message(svc, jid.as_str(), child.clone());
            notes.push(Output::Remote { stanza });
        }
    }

    /// Notifies the publication of `items`.
    pub(super) fn notify_items(
        &mut self,
        svc: &Service,
        name: &str,
        items: &[&Item],
        notes: &mut Vec<Output>,
    ) {
        let Some(node) = self.pubsub.node(svc, name) else {
            return;
        };
        let mut el = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name);
        for item in items {
            el.push_child(event_item(node, item));
        }
        self.notify_event(svc, name, el, notes);
    }

    /// The last item, to a new subscription's JID (XEP-0060 §6.1.7).
    pub(super) fn send_last_item(
        &mut self,
        svc: &Service,
        name: &str,
        item: &Item,
        jid: &str,
        notes: &mut Vec<Output>,
    ) {
        let Some(node) = self.pubsub.node(svc, name) else {
            return;
        };
        let el = Element::new("items", ns::PUBSUB_EVENT)
            .with_attr("node", name)
            .with_child(event_item(node, item));
        for session in self.sessions_of_subscriber(jid) {
            if let Some(to) = self.session_jid(session) {
                let msg = self.event_message(svc, to.as_str(), el.clone());
                deliver(notes, session, msg);
            }
        }
        if self.config.federation
            && let Ok(remote) = Jid::new(jid)
            && self.is_foreign_domain(remote.domain().as_str())
        {
            let stanza = self.event_message(svc, jid, el);
            notes.push(Output::Remote { stanza });
        }
    }

    /// A resource's capabilities became known: the last item of every PEP
    /// node it is interested in, of its own account and of the contacts it
    /// is subscribed to (XEP-0163 §4.3.2, `on_sub_and_presence`).
    pub(super) fn send_last_items_on_presence(
        &mut self,
        session: SessionId,
        out: &mut Vec<Output>,
    ) {
        let Some(full) = self.session_jid(session) else {
            return;
        };
        let user = full.to_bare();
        let mut owners = vec![user.clone()];
        owners.extend(self.subscriptions(&user));
        let mut sends: Vec<(Service, Element)> = Vec::new();
        for owner in owners {
            let svc = Service::Pep(owner.clone());
            let Some(nodes) = self.pubsub.services.get(&svc.jid()) else {
                continue;
            };
            for (name, node) in nodes {
                if node.config.send_last != SendLast::OnSubAndPresence
                    || !self.pubsub.caps.wants(session, name)
                    || !self.pep_audience(&owner, node, &user)
                {
                    continue;
                }
                if let Some(last) = node.last() {
                    let el = Element::new("items", ns::PUBSUB_EVENT)
                        .with_attr("node", name.clone())
                        .with_child(event_item(node, last));
                    sends.push((svc.clone(), el));
                }
            }
        }
        for (svc, el) in sends {
            let msg = self.event_message(&svc, full.as_str(), el);
            deliver(out, session, msg);
        }
    }
}
