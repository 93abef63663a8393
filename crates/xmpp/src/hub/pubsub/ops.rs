//! The entity use cases of XEP-0060 (§6, §7) and node creation (§8.1):
//! create, publish, retract, subscribe, unsubscribe, retrieve items, and the
//! requester's own subscriptions and affiliations.

use jid::Jid;
use tributary_xmpp_xml::Element;

use super::super::Output;
use super::super::vcard::approx_xml_len;
use super::errors::PsError;
use super::form::{self, FormError};
use super::node::{Affiliation, Item, Node, NodeConfig, PublishModel, SendLast, UnsubscribeError};
use super::{
    Answer, MAX_ITEM_BYTES, MAX_PEP_NODES, MAX_SERVICE_NODES, Req, Service, node_attr, store,
    valid_name,
};
use crate::hub::Hub;
use crate::ns;

/// `<pubsub xmlns='…pubsub'>` with one child.
pub(super) fn pubsub(child: Element) -> Element {
    Element::new("pubsub", ns::PUBSUB).with_child(child)
}

/// The `<configure/>` sibling's form, if any, applied to `base`.
fn configure_form(
    parent: &Element,
    name: &str,
    form_type: &str,
    base: &NodeConfig,
) -> Result<Option<form::Fields>, PsError> {
    let Some(x) = parent
        .child(name, ns::PUBSUB)
        .and_then(|c| c.child("x", ns::DATA_FORMS))
    else {
        return Ok(None);
    };
    let fields = form::parse_submit(x, form_type).map_err(|_| PsError::bad_request())?;
    form::apply(base, &fields).map_err(|e| match e {
        FormError::BadValue(f) => PsError::not_acceptable().with_text(format!("bad value for {f}")),
        FormError::NotAForm => PsError::bad_request(),
    })?;
    Ok(Some(fields))
}

impl Hub {
    fn default_config(svc: &Service) -> NodeConfig {
        if svc.is_pep() {
            NodeConfig::pep_default()
        } else {
            NodeConfig::service_default()
        }
    }

    /// Whether `req.user` may create nodes at `req.svc`.
    fn may_create(req: &Req<'_>) -> Result<(), PsError> {
        match &req.svc {
            Service::Pep(owner) if *owner != req.user => Err(PsError::forbidden()),
            _ => Ok(()),
        }
    }

    /// Inserts a new node (checking the service's node limit) and stores it.
    fn insert_node(
        &mut self,
        svc: &Service,
        name: &str,
        node: Node,
        out: &mut Vec<Output>,
    ) -> Result<(), PsError> {
        let svc_jid = svc.jid();
        let nodes = self.pubsub.services.entry(svc_jid.clone()).or_default();
        let max = if svc.is_pep() {
            MAX_PEP_NODES
        } else {
            MAX_SERVICE_NODES
        };
        if nodes.len() >= max {
            return Err(PsError::resource_constraint().with_text("too many nodes"));
        }
        store::put_node(&svc_jid, name, &node, out);
        nodes.insert(name.to_string(), node);
        Ok(())
    }

    /// §8.1: create a node, named or instant, optionally configured.
    pub(super) fn ps_create(
        &mut self,
        req: &Req<'_>,
        pubsub_el: &Element,
        create: &Element,
        out: &mut Vec<Output>,
    ) -> Answer {
        Self::may_create(req)?;
        let base = Self::default_config(&req.svc);
        let fields = configure_form(pubsub_el, "configure", form::NODE_CONFIG, &base)?;
        let config = match &fields {
            Some(f) => form::apply(&base, f).map_err(|_| PsError::not_acceptable())?,
            None => base,
        };
        let (name, instant) = match create.attr("node") {
            Some(n) if !n.is_empty() => {
                if !valid_name(n) {
                    return Err(PsError::not_acceptable().with_text("invalid node name"));
                }
                (n.to_string(), false)
            }
            _ if req.svc.is_pep() => return Err(PsError::nodeid_required()),
            _ => (self.pubsub.fresh_id(), true),
        };
        if self.pubsub.node(&req.svc, &name).is_some() {
            return Err(PsError::conflict());
        }
        self.insert_node(&req.svc, &name, Node::new(req.user.clone(), config), out)?;
        Ok(instant.then(|| pubsub(Element::new("create", ns::PUBSUB).with_attr("node", name))))
    }

    /// §7.1: publish an item (PEP: auto-create with the publish options).
    pub(super) fn ps_publish(
        &mut self,
        req: &Req<'_>,
        pubsub_el: &Element,
        publish: &Element,
        out: &mut Vec<Output>,
        notes: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(publish)?.to_string();
        let mut items = publish.elements().filter(|e| e.is("item", ns::PUBSUB));
        let (item_el, None) = (items.next(), items.next()) else {
            return Err(PsError::bad_request().with_text("one item per publish"));
        };
        let payload = match item_el {
            Some(item) => {
                let mut payloads = item.elements();
                match (payloads.next(), payloads.next()) {
                    (Some(p), None) => Some(p.clone()),
                    (None, _) => None,
                    _ => return Err(PsError::invalid_payload()),
                }
            }
            None => None,
        };
        let Some(payload) = payload else {
            return Err(PsError::payload_required());
        };
        if approx_xml_len(&payload) > MAX_ITEM_BYTES {
            return Err(PsError::payload_too_big());
        }
        let id = match item_el.and_then(|i| i.attr("id")) {
            Some(id) if !id.is_empty() => {
                if !valid_name(id) {
                    return Err(PsError::bad_request().with_text("invalid item id"));
                }
                id.to_string()
            }
            _ => self.pubsub.fresh_id(),
        };
        let options = match pubsub_el
            .child("publish-options", ns::PUBSUB)
            .and_then(|c| c.child("x", ns::DATA_FORMS))
        {
            Some(x) => Some(
                form::parse_submit(x, form::PUBLISH_OPTIONS).map_err(|_| PsError::bad_request())?,
            ),
            None => None,
        };
        match self.pubsub.node(&req.svc, &name) {
            Some(node) => {
                if let Some(opts) = &options
                    && !form::preconditions_met(&node.config, opts)
                {
                    return Err(PsError::precondition_not_met());
                }
                let aff = node.affiliation(&req.user);
                let allowed = aff >= Affiliation::Publisher
                    || match node.config.publish_model {
                        PublishModel::Publishers => false,
                        PublishModel::Subscribers => node.is_subscribed_bare(&req.user),
                        PublishModel::Open => aff != Affiliation::Outcast,
                    };
                if !allowed {
                    return Err(PsError::forbidden());
                }
            }
            None if req.svc.is_pep() => {
                Self::may_create(req)?;
                let base = NodeConfig::pep_default();
                let config = match &options {
                    Some(opts) => {
                        form::apply(&base, opts).map_err(|_| PsError::precondition_not_met())?
                    }
                    None => base,
                };
                self.insert_node(&req.svc, &name, Node::new(req.user.clone(), config), out)?;
            }
            None => return Err(PsError::item_not_found()),
        }
        let seq = self.pubsub.next_seq();
        let item = Item {
            id: id.clone(),
            payload: Some(payload),
            publisher: req.user.to_string(),
            seq,
        };
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let dropped = node.publish(item.clone());
        if node.config.persist_items {
            for old in &dropped {
                store::delete_item(&svc_jid, &name, &old.id, out);
            }
            store::put_item(&svc_jid, &name, &item, out);
        }
        self.notify_items(&req.svc, &name, &[&item], notes);
        Ok(Some(pubsub(
            Element::new("publish", ns::PUBSUB)
                .with_attr("node", name)
                .with_child(Element::new("item", ns::PUBSUB).with_attr("id", id)),
        )))
    }

    /// §7.2: retract an item (publishers and owners).
    pub(super) fn ps_retract(
        &mut self,
        req: &Req<'_>,
        retract: &Element,
        out: &mut Vec<Output>,
        notes: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(retract)?.to_string();
        let ids: Vec<String> = retract
            .elements()
            .filter(|e| e.is("item", ns::PUBSUB))
            .filter_map(|e| e.attr("id").map(str::to_string))
            .collect();
        if ids.is_empty() {
            return Err(PsError::item_required());
        }
        let notify_attr = matches!(retract.attr("notify"), Some("1" | "true"));
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let aff = node.affiliation(&req.user);
        // Publishers may retract; anyone may retract their own item.
        let own = |n: &Node, id: &str| {
            n.items
                .iter()
                .any(|i| i.id == id && i.publisher == req.user.as_str())
        };
        if aff < Affiliation::Publisher && !ids.iter().all(|id| own(node, id)) {
            return Err(PsError::forbidden());
        }
        if !ids.iter().all(|id| node.items.iter().any(|i| &i.id == id)) {
            return Err(PsError::item_not_found());
        }
        let persist = node.config.persist_items;
        let notify = notify_attr || node.config.notify_retract;
        for id in &ids {
            node.retract(id);
            if persist {
                store::delete_item(&svc_jid, &name, id, out);
            }
        }
        if notify {
            let mut items = Element::new("items", ns::PUBSUB_EVENT).with_attr("node", name.clone());
            for id in &ids {
                items.push_child(
                    Element::new("retract", ns::PUBSUB_EVENT).with_attr("id", id.clone()),
                );
            }
            self.notify_event(&req.svc, &name, items, notes);
        }
        Ok(None)
    }

    /// §6.1: subscribe (the requester's own JID only).
    pub(super) fn ps_subscribe(
        &mut self,
        req: &Req<'_>,
        sub: &Element,
        out: &mut Vec<Output>,
        notes: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(sub)?.to_string();
        let jid = sub
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(PsError::invalid_jid)?;
        if jid.to_bare() != req.user {
            return Err(PsError::invalid_jid());
        }
        let Some(node) = self.pubsub.node(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        self.ps_may_access(node, &req.user)?;
        let subid = self.pubsub.fresh_id();
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let (s, new) = node.subscribe(jid.as_str(), subid);
        if new {
            store::put_node(&svc_jid, &name, node, out);
        }
        if node.config.send_last != SendLast::Never
            && let Some(last) = node.last().cloned()
        {
            self.send_last_item(&req.svc, &name, &last, jid.as_str(), notes);
        }
        Ok(Some(pubsub(
            Element::new("subscription", ns::PUBSUB)
                .with_attr("node", name)
                .with_attr("jid", s.jid)
                .with_attr("subid", s.subid)
                .with_attr("subscription", "subscribed"),
        )))
    }

    /// §6.2: unsubscribe.
    pub(super) fn ps_unsubscribe(
        &mut self,
        req: &Req<'_>,
        unsub: &Element,
        out: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(unsub)?.to_string();
        let jid = unsub
            .attr("jid")
            .and_then(|j| Jid::new(j).ok())
            .ok_or_else(PsError::invalid_jid)?;
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        if jid.to_bare() != req.user && node.affiliation(&req.user) != Affiliation::Owner {
            return Err(PsError::forbidden());
        }
        node.unsubscribe(jid.as_str(), unsub.attr("subid"))
            .map_err(|e| match e {
                UnsubscribeError::NotSubscribed => PsError::not_subscribed(),
                UnsubscribeError::SubidRequired => PsError::subid_required(),
                UnsubscribeError::InvalidSubid => PsError::invalid_subid(),
            })?;
        store::put_node(&svc_jid, &name, node, out);
        Ok(None)
    }

    /// §6.5: retrieve items (all, the newest `max_items`, or by id).
    pub(super) fn ps_items(&mut self, req: &Req<'_>, items_el: &Element) -> Answer {
        let name = node_attr(items_el)?;
        let Some(node) = self.pubsub.node(&req.svc, name) else {
            return Err(PsError::item_not_found());
        };
        self.ps_may_access(node, &req.user)?;
        let ids: Vec<String> = items_el
            .elements()
            .filter(|e| e.is("item", ns::PUBSUB))
            .filter_map(|e| e.attr("id").map(str::to_string))
            .collect();
        let max = match items_el.attr("max_items") {
            Some(m) => Some(m.parse::<usize>().map_err(|_| PsError::bad_request())?),
            None => None,
        };
        let mut result = Element::new("items", ns::PUBSUB).with_attr("node", name);
        for item in node.select(&ids, max) {
            let mut el = Element::new("item", ns::PUBSUB).with_attr("id", item.id.clone());
            if let Some(p) = &item.payload {
                el.push_child(p.clone());
            }
            result.push_child(el);
        }
        Ok(Some(pubsub(result)))
    }

    /// §5.6: the requester's subscriptions at this service.
    pub(super) fn ps_my_subscriptions(&self, req: &Req<'_>, el: &Element) -> Element {
        let only = el.attr("node");
        let mut subs = Element::new("subscriptions", ns::PUBSUB);
        if let Some(n) = only {
            subs.set_attr("node", n);
        }
        if let Some(nodes) = self.pubsub.services.get(&req.svc.jid()) {
            for (name, node) in nodes {
                if only.is_some_and(|o| o != name) {
                    continue;
                }
                for s in &node.subscriptions {
                    if Jid::new(&s.jid).is_ok_and(|j| j.to_bare() == req.user) {
                        subs.push_child(
                            Element::new("subscription", ns::PUBSUB)
                                .with_attr("node", name.clone())
                                .with_attr("jid", s.jid.clone())
                                .with_attr("subid", s.subid.clone())
                                .with_attr("subscription", "subscribed"),
                        );
                    }
                }
            }
        }
        pubsub(subs)
    }

    /// §5.7: the requester's affiliations at this service.
    pub(super) fn ps_my_affiliations(&self, req: &Req<'_>, el: &Element) -> Element {
        let only = el.attr("node");
        let mut affs = Element::new("affiliations", ns::PUBSUB);
        if let Some(n) = only {
            affs.set_attr("node", n);
        }
        if let Some(nodes) = self.pubsub.services.get(&req.svc.jid()) {
            for (name, node) in nodes {
                if only.is_some_and(|o| o != name) {
                    continue;
                }
                let a = node.affiliation(&req.user);
                if a != Affiliation::None {
                    affs.push_child(
                        Element::new("affiliation", ns::PUBSUB)
                            .with_attr("node", name.clone())
                            .with_attr("affiliation", a.as_str()),
                    );
                }
            }
        }
        pubsub(affs)
    }
}
