//! The owner use cases of XEP-0060 (§8): configure, default options,
//! delete, purge, and managing subscriptions and affiliations.

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use super::super::Output;
use super::errors::PsError;
use super::form::{self, FormError};
use super::node::{Affiliation, Node};
use super::{Answer, Req, node_attr, store};
use crate::hub::Hub;
use crate::ns;

/// `<pubsub xmlns='…#owner'>` with one child.
fn owner_pubsub(child: Element) -> Element {
    Element::new("pubsub", ns::PUBSUB_OWNER).with_child(child)
}

impl Hub {
    /// The node, which `req.user` must own.
    fn owned_node(&self, req: &Req<'_>, name: &str) -> Result<&Node, PsError> {
        let node = self
            .pubsub
            .node(&req.svc, name)
            .ok_or_else(PsError::item_not_found)?;
        if node.affiliation(&req.user) != Affiliation::Owner {
            return Err(PsError::forbidden());
        }
        Ok(node)
    }

    /// §8.2: the configuration form.
    pub(super) fn ps_get_config(&self, req: &Req<'_>, el: &Element) -> Answer {
        let name = node_attr(el)?;
        let node = self.owned_node(req, name)?;
        Ok(Some(owner_pubsub(
            Element::new("configure", ns::PUBSUB_OWNER)
                .with_attr("node", name)
                .with_child(form::config_form(&node.config)),
        )))
    }

    /// §8.2.4: submit a new configuration.
    pub(super) fn ps_set_config(
        &mut self,
        req: &Req<'_>,
        el: &Element,
        out: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(el)?.to_string();
        let node = self.owned_node(req, &name)?;
        let x = el
            .child("x", ns::DATA_FORMS)
            .ok_or_else(PsError::bad_request)?;
        let fields =
            form::parse_submit(x, form::NODE_CONFIG).map_err(|_| PsError::bad_request())?;
        let config = form::apply(&node.config, &fields).map_err(|e| match e {
            FormError::BadValue(f) => {
                PsError::not_acceptable().with_text(format!("bad value for {f}"))
            }
            FormError::NotAForm => PsError::bad_request(),
        })?;
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let was_persistent = node.config.persist_items;
        let dropped = node.configure(config);
        let now_persistent = node.config.persist_items;
        store::put_node(&svc_jid, &name, node, out);
        if was_persistent {
            for old in &dropped {
                store::delete_item(&svc_jid, &name, &old.id, out);
            }
        }
        match (was_persistent, now_persistent) {
            (true, false) => {
                for item in &node.items {
                    store::delete_item(&svc_jid, &name, &item.id, out);
                }
            }
            (false, true) => {
                for item in &node.items {
                    store::put_item(&svc_jid, &name, item, out);
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// §8.3: the default node configuration. Since XEP-0060 1.27 a `type`
    /// attribute names the node type; anything but `leaf` is a type we do
    /// not have (collections, XEP-0248).
    pub(super) fn ps_default(&self, req: &Req<'_>, el: &Element) -> Answer {
        if el.attr("type").is_some_and(|t| t != "leaf") {
            return Err(PsError::unsupported("collections"));
        }
        let config = if matches!(req.svc, super::Service::Pep(_)) {
            super::node::NodeConfig::pep_default()
        } else {
            super::node::NodeConfig::service_default()
        };
        Ok(Some(owner_pubsub(
            Element::new("default", ns::PUBSUB_OWNER).with_child(form::config_form(&config)),
        )))
    }

    /// §8.4: delete a node; subscribers are told.
    pub(super) fn ps_delete(
        &mut self,
        req: &Req<'_>,
        el: &Element,
        out: &mut Vec<Output>,
        notes: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(el)?.to_string();
        let node = self.owned_node(req, &name)?;
        if node.config.notify_delete {
            let delete = Element::new("delete", ns::PUBSUB_EVENT).with_attr("node", name.clone());
            self.notify_event(&req.svc, &name, delete, notes);
        }
        let svc_jid = req.svc.jid();
        let Some(node) = self
            .pubsub
            .services
            .get_mut(&svc_jid)
            .and_then(|s| s.remove(&name))
        else {
            return Err(PsError::item_not_found());
        };
        if node.config.persist_items {
            for item in &node.items {
                store::delete_item(&svc_jid, &name, &item.id, out);
            }
        }
        store::delete_node(&svc_jid, &name, out);
        Ok(None)
    }

    /// §8.5: purge every item; subscribers are told.
    pub(super) fn ps_purge(
        &mut self,
        req: &Req<'_>,
        el: &Element,
        out: &mut Vec<Output>,
        notes: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(el)?.to_string();
        self.owned_node(req, &name)?;
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let persist = node.config.persist_items;
        let notify = node.config.notify_retract;
        for item in node.purge() {
            if persist {
                store::delete_item(&svc_jid, &name, &item.id, out);
            }
        }
        if notify {
            let purge = Element::new("purge", ns::PUBSUB_EVENT).with_attr("node", name.clone());
            self.notify_event(&req.svc, &name, purge, notes);
        }
        Ok(None)
    }

    /// §8.8.1: the node's subscriptions.
    pub(super) fn ps_owner_subscriptions(&self, req: &Req<'_>, el: &Element) -> Answer {
        let name = node_attr(el)?;
        let node = self.owned_node(req, name)?;
        let mut subs = Element::new("subscriptions", ns::PUBSUB_OWNER).with_attr("node", name);
        for s in &node.subscriptions {
            subs.push_child(
                Element::new("subscription", ns::PUBSUB_OWNER)
                    .with_attr("jid", s.jid.clone())
                    .with_attr("subscription", "subscribed")
                    .with_attr("subid", s.subid.clone()),
            );
        }
        Ok(Some(owner_pubsub(subs)))
    }

    /// §8.8.2: add (`subscribed`) or remove (`none`) subscriptions.
    pub(super) fn ps_set_subscriptions(
        &mut self,
        req: &Req<'_>,
        el: &Element,
        out: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(el)?.to_string();
        self.owned_node(req, &name)?;
        let mut changes = Vec::new();
        for s in el
            .elements()
            .filter(|e| e.is("subscription", ns::PUBSUB_OWNER))
        {
            let jid = s
                .attr("jid")
                .and_then(|j| Jid::new(j).ok())
                .ok_or_else(PsError::bad_request)?;
            let add = match s.attr("subscription") {
                Some("subscribed") => true,
                Some("none") => false,
                _ => return Err(PsError::bad_request()),
            };
            changes.push((jid, add));
        }
        let mut subids = Vec::new();
        for _ in &changes {
            subids.push(self.pubsub.fresh_id());
        }
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        for ((jid, add), subid) in changes.into_iter().zip(subids) {
            if add {
                node.subscribe(jid.as_str(), subid);
            } else {
                node.subscriptions.retain(|s| s.jid != jid.as_str());
            }
        }
        store::put_node(&svc_jid, &name, node, out);
        Ok(None)
    }

    /// §8.9.1: the node's affiliations.
    pub(super) fn ps_owner_affiliations(&self, req: &Req<'_>, el: &Element) -> Answer {
        let name = node_attr(el)?;
        let node = self.owned_node(req, name)?;
        let mut affs = Element::new("affiliations", ns::PUBSUB_OWNER).with_attr("node", name);
        for (jid, a) in &node.affiliations {
            affs.push_child(
                Element::new("affiliation", ns::PUBSUB_OWNER)
                    .with_attr("jid", jid.to_string())
                    .with_attr("affiliation", a.as_str()),
            );
        }
        Ok(Some(owner_pubsub(affs)))
    }

    /// §8.9.2: change affiliations; a node keeps at least one owner, and a
    /// PEP node's owner stays its account.
    pub(super) fn ps_set_affiliations(
        &mut self,
        req: &Req<'_>,
        el: &Element,
        out: &mut Vec<Output>,
    ) -> Answer {
        let name = node_attr(el)?.to_string();
        self.owned_node(req, &name)?;
        let mut changes: Vec<(BareJid, Affiliation)> = Vec::new();
        for a in el
            .elements()
            .filter(|e| e.is("affiliation", ns::PUBSUB_OWNER))
        {
            let jid = a
                .attr("jid")
                .and_then(|j| BareJid::new(j).ok())
                .ok_or_else(PsError::bad_request)?;
            let aff = a
                .attr("affiliation")
                .and_then(Affiliation::parse)
                .ok_or_else(PsError::bad_request)?;
            if let super::Service::Pep(owner) = &req.svc
                && *owner == jid
                && aff != Affiliation::Owner
            {
                return Err(PsError::not_acceptable().with_text("the account owns its PEP nodes"));
            }
            changes.push((jid, aff));
        }
        let svc_jid = req.svc.jid();
        let Some(node) = self.pubsub.node_mut(&req.svc, &name) else {
            return Err(PsError::item_not_found());
        };
        let mut next = node.clone();
        for (jid, aff) in changes {
            next.set_affiliation(jid, aff);
        }
        if next.owners().is_empty() {
            return Err(PsError::not_acceptable().with_text("a node needs an owner"));
        }
        node.affiliations = next.affiliations;
        store::put_node(&svc_jid, &name, node, out);
        Ok(None)
    }
}
