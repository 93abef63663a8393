//! Publish-subscribe (XEP-0060) on `pubsub.<domain>` and the Personal
//! Eventing Protocol (XEP-0163) on every account's bare JID, with the
//! entity-capabilities (XEP-0115) `+notify` filtering PEP needs.
//!
//! Both kinds of service share one node machine ([`node::Node`]); a
//! service is named by its JID: the component's domain, or the account's
//! bare JID. What differs:
//!
//! - `pubsub.<domain>`: any local user creates nodes (named or instant),
//!   defaults are open access, 10 items, persistent; notifications go to
//!   the explicit subscribers.
//! - PEP: only the account publishes; a publish to a missing node creates
//!   it (with the publish options as its configuration); defaults are
//!   presence access and one item; notifications go to the explicit
//!   subscribers and to every available resource of the owner and of the
//!   contacts allowed by the access model whose capabilities include
//!   `<node>+notify`; the last item is sent when a resource's capabilities
//!   are resolved (its presence) and on subscription.
//!
//! Nodes (configuration, affiliations, subscriptions) are always stored;
//! items when the node's `pubsub#persist_items` is on (see [`store`]).

pub(crate) mod caps;
pub(crate) mod errors;
pub(crate) mod form;
pub(crate) mod node;
mod notify;
mod ops;
mod owner;
pub(crate) mod store;

#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use jid::{BareJid, Jid};
use tributary_xmpp_xml::Element;

use self::errors::PsError;
use self::node::{AccessModel, Affiliation, Node};
use super::iq::result_for;
use super::sessions::deliver;
use super::{Ctx, Hub, HubError, Output, SessionId, StanzaError};
use crate::ns;

/// Largest item accepted (its approximate serialized size).
pub(crate) const MAX_ITEM_BYTES: usize = 200 * 1024;
/// Most nodes on the `pubsub.<domain>` service.
pub(crate) const MAX_SERVICE_NODES: usize = 10_000;
/// Most PEP nodes of one account.
pub(crate) const MAX_PEP_NODES: usize = 256;
/// Longest node name or item id, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// XEP-0060 features (`http://jabber.org/protocol/pubsub#…`) of `pubsub.<domain>`.
const SERVICE_FEATURES: &[&str] = &[
    "access-open",
    "access-presence",
    "access-roster",
    "access-whitelist",
    "config-node",
    "create-and-configure",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "instant-nodes",
    "item-ids",
    "last-published",
    "manage-subscriptions",
    "modify-affiliations",
    "persistent-items",
    "publish",
    "publish-options",
    "purge-nodes",
    "retract-items",
    "retrieve-affiliations",
    "retrieve-default",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
];

/// XEP-0060 features of an account's PEP service (XEP-0163 §6).
const PEP_FEATURES: &[&str] = &[
    "access-presence",
    "access-roster",
    "access-whitelist",
    "access-open",
    "auto-create",
    "auto-subscribe",
    "config-node",
    "create-nodes",
    "delete-items",
    "delete-nodes",
    "filtered-notifications",
    "item-ids",
    "last-published",
    "persistent-items",
    "publish",
    "publish-options",
    "purge-nodes",
    "retract-items",
    "retrieve-items",
    "retrieve-subscriptions",
    "subscribe",
];

/// A publish-subscribe service: the component or an account's PEP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    /// `pubsub.<domain>`.
    Component(String),
    /// The PEP service of this account.
    Pep(BareJid),
}

impl Service {
    /// The service's JID, also its key in the store.
    pub(crate) fn jid(&self) -> String {
        match self {
            Service::Component(d) => d.clone(),
            Service::Pep(b) => b.to_string(),
        }
    }

    fn is_pep(&self) -> bool {
        matches!(self, Service::Pep(_))
    }
}

/// The publish-subscribe state of the hub.
pub(crate) struct PubSub {
    /// `pubsub.<domain>`, or `None` when the component is disabled.
    pub(crate) domain: Option<String>,
    /// Every service's nodes, by service JID.
    pub(crate) services: store::Services,
    /// Resources' capabilities.
    pub(crate) caps: caps::Caps,
    /// Next item sequence number (publish order across restarts).
    next_seq: u64,
    seed: RandomState,
    counter: u64,
}

impl PubSub {
    /// No nodes; the component on `domain` if given.
    pub(crate) fn new(domain: Option<String>) -> Self {
        PubSub {
            domain: domain.filter(|d| !d.is_empty()),
            services: Default::default(),
            caps: Default::default(),
            next_seq: 1,
            seed: RandomState::new(),
            counter: 0,
        }
    }

    /// A fresh identifier that is not guessable across restarts (item ids,
    /// subids, instant node names, notification ids).
    pub(crate) fn fresh_id(&mut self) -> String {
        self.counter += 1;
        let mut h = self.seed.build_hasher();
        h.write_u64(self.counter);
        format!("{:016x}{:04x}", h.finish(), self.counter & 0xffff)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    fn node(&self, svc: &Service, name: &str) -> Option<&Node> {
        self.services.get(&svc.jid()).and_then(|s| s.get(name))
    }

    fn node_mut(&mut self, svc: &Service, name: &str) -> Option<&mut Node> {
        self.services
            .get_mut(&svc.jid())
            .and_then(|s| s.get_mut(name))
    }

    /// Restores one of [`store::NODE_TABLE`] / [`store::ITEM_TABLE`].
    pub(crate) fn restore(
        &mut self,
        table: &str,
        rows: Vec<(String, Vec<u8>)>,
    ) -> Result<(), HubError> {
        let max = store::restore(&mut self.services, table, rows)?;
        self.next_seq = self.next_seq.max(max.saturating_add(1));
        Ok(())
    }
}

/// One request being handled: who asks, at which service.
pub(crate) struct Req<'a> {
    /// The requesting session.
    pub(crate) session: SessionId,
    /// Its bare JID.
    pub(crate) user: BareJid,
    /// The service addressed.
    pub(crate) svc: Service,
    /// The iq.
    pub(crate) stanza: &'a Element,
}

/// A request's outcome: the result payload, or the error.
type Answer = Result<Option<Element>, PsError>;

/// A valid node name or item id: not empty, bounded, no control characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control)
}

/// The `node` attribute, required (`nodeid-required`) and valid.
fn node_attr(el: &Element) -> Result<&str, PsError> {
    match el.attr("node") {
        None | Some("") => Err(PsError::nodeid_required()),
        Some(n) if !valid_name(n) => Err(PsError::item_not_found()),
        Some(n) => Ok(n),
    }
}

impl Hub {
    /// Whether `to` is the `pubsub.<domain>` component.
    pub(super) fn is_pubsub_service(&self, to: &Jid) -> bool {
        to.node().is_none()
            && self
                .pubsub
                .domain
                .as_deref()
                .is_some_and(|d| d == to.domain().as_str())
    }

    /// A stanza addressed to `pubsub.<domain>`: iqs are served; results,
    /// errors and presence are dropped; messages are refused.
    pub(super) fn pubsub_component_stanza(
        &mut self,
        cx: &Ctx<'_>,
        stanza: Element,
        out: &mut Vec<Output>,
    ) {
        let Some(domain) = self.pubsub.domain.clone() else {
            return;
        };
        match (stanza.name.as_str(), stanza.attr("type")) {
            ("iq", Some("get" | "set")) => {}
            ("message", t) if t != Some("error") => {
                self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out);
                return;
            }
            ("iq", Some("result" | "error")) => return,
            ("iq", _) => {
                self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
                return;
            }
            _ => return,
        }
        let mut children = stanza.elements();
        let (Some(payload), None, Some(_)) =
            (children.next().cloned(), children.next(), stanza.attr("id"))
        else {
            self.bounce(cx.session, &stanza, StanzaError::bad_request(), out);
            return;
        };
        let req = Req {
            session: cx.session,
            user: cx.user.clone(),
            svc: Service::Component(domain),
            stanza: &stanza,
        };
        let get = stanza.attr("type") == Some("get");
        match (payload.ns.as_str(), payload.name.as_str()) {
            (ns::DISCO_INFO, "query") if get => self.pubsub_disco_info(&req, &payload, out),
            (ns::DISCO_ITEMS, "query") if get => self.pubsub_disco_items(&req, &payload, out),
            (ns::PUBSUB | ns::PUBSUB_OWNER, "pubsub") => self.pubsub_request(&req, &payload, out),
            _ => self.bounce(cx.session, &stanza, StanzaError::service_unavailable(), out),
        }
    }

    /// A `<pubsub/>` iq addressed to an account (PEP, XEP-0163): `owner` is
    /// the addressed account (the sender's own without `to`).
    pub(super) fn pep_iq(
        &mut self,
        cx: &Ctx<'_>,
        owner: BareJid,
        stanza: &Element,
        payload: &Element,
        out: &mut Vec<Output>,
    ) {
        let req = Req {
            session: cx.session,
            user: cx.user.clone(),
            svc: Service::Pep(owner),
            stanza,
        };
        self.pubsub_request(&req, payload, out);
    }

    /// Dispatches a `<pubsub/>` or `<pubsub xmlns='…#owner'/>` request and
    /// answers it; notifications follow the answer.
    fn pubsub_request(&mut self, req: &Req<'_>, payload: &Element, out: &mut Vec<Output>) {
        let set = req.stanza.attr("type") == Some("set");
        let mut notes = Vec::new();
        let answer = match payload.elements().next() {
            None => Err(PsError::bad_request()),
            Some(op) if payload.ns == ns::PUBSUB => match (op.name.as_str(), set) {
                ("create", true) => self.ps_create(req, payload, op, out),
                ("publish", true) => self.ps_publish(req, payload, op, out, &mut notes),
                ("retract", true) => self.ps_retract(req, op, out, &mut notes),
                ("subscribe", true) => self.ps_subscribe(req, op, out, &mut notes),
                ("unsubscribe", true) => self.ps_unsubscribe(req, op, out),
                ("items", false) => self.ps_items(req, op),
                ("subscriptions", false) => Ok(Some(self.ps_my_subscriptions(req, op))),
                ("affiliations", false) => Ok(Some(self.ps_my_affiliations(req, op))),
                ("options", _) => Err(PsError::unsupported("subscription-options")),
                ("default", false) => Err(PsError::unsupported("retrieve-default-sub")),
                _ => Err(PsError::bad_request()),
            },
            Some(op) => match (op.name.as_str(), set) {
                ("configure", false) => self.ps_get_config(req, op),
                ("configure", true) => self.ps_set_config(req, op, out),
                ("default", false) => self.ps_default(req, op),
                ("delete", true) => self.ps_delete(req, op, out, &mut notes),
                ("purge", true) => self.ps_purge(req, op, out, &mut notes),
                ("subscriptions", false) => self.ps_owner_subscriptions(req, op),
                ("subscriptions", true) => self.ps_set_subscriptions(req, op, out),
                ("affiliations", false) => self.ps_owner_affiliations(req, op),
                ("affiliations", true) => self.ps_set_affiliations(req, op, out),
                _ => Err(PsError::bad_request()),
            },
        };
        match answer {
            Ok(payload) => {
                let mut reply = result_for(req.stanza);
                if let Some(p) = payload {
                    reply.push_child(p);
                }
                deliver(out, req.session, reply);
            }
            Err(e) => {
                if req.stanza.attr("type") != Some("error") {
                    deliver(out, req.session, e.reply_to(req.stanza));
                }
            }
        }
        out.extend(notes);
    }

    /// May `user` subscribe to and retrieve from `node` (XEP-0060 §4.5)?
    pub(crate) fn ps_may_access(&self, node: &Node, user: &BareJid) -> Result<(), PsError> {
        match node.affiliation(user) {
            Affiliation::Outcast => return Err(PsError::forbidden()),
            Affiliation::Member | Affiliation::Publisher | Affiliation::Owner => return Ok(()),
            Affiliation::None => {}
        }
        let owners = node.owners();
        match node.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                let ok = owners.iter().any(|o| {
                    self.rosters
                        .get(o)
                        .and_then(|r| r.items.get(user))
                        .is_some_and(|i| i.sub.has_from())
                });
                if ok {
                    Ok(())
                } else {
                    Err(PsError::presence_subscription_required())
                }
            }
            AccessModel::Roster => {
                let groups = &node.config.roster_groups;
                let ok = owners.iter().any(|o| {
                    self.rosters
                        .get(o)
                        .and_then(|r| r.items.get(user))
                        .is_some_and(|i| {
                            groups.is_empty() || i.groups.iter().any(|g| groups.contains(g))
                        })
                });
                if ok {
                    Ok(())
                } else {
                    Err(PsError::not_in_roster_group())
                }
            }
            AccessModel::Whitelist => Err(PsError::closed_node()),
        }
    }

    /// disco#info of `pubsub.<domain>` or of one of its nodes.
    fn pubsub_disco_info(&self, req: &Req<'_>, query: &Element, out: &mut Vec<Output>) {
        let mut q = Element::new("query", ns::DISCO_INFO);
        let identity = |kind: &str| {
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "pubsub")
                .with_attr("type", kind)
        };
        let feature = |f: &str| Element::new("feature", ns::DISCO_INFO).with_attr("var", f);
        match query.attr("node") {
            None => {
                q.push_child(identity("service").with_attr("name", "Publish-Subscribe"));
                q.push_child(feature(ns::DISCO_INFO));
                q.push_child(feature(ns::DISCO_ITEMS));
                q.push_child(feature(ns::PUBSUB));
                for f in SERVICE_FEATURES {
                    q.push_child(feature(&format!("{}#{f}", ns::PUBSUB)));
                }
            }
            Some(name) => {
                let Some(node) = self.pubsub.node(&req.svc, name) else {
                    deliver(
                        out,
                        req.session,
                        PsError::item_not_found().reply_to(req.stanza),
                    );
                    return;
                };
                q.set_attr("node", name);
                q.push_child(identity("leaf"));
                q.push_child(feature(ns::PUBSUB));
                q.push_child(meta_form(node));
            }
        }
        deliver(out, req.session, result_for(req.stanza).with_child(q));
    }

    /// disco#items of `pubsub.<domain>` (its nodes) or of a node (its items).
    fn pubsub_disco_items(&self, req: &Req<'_>, query: &Element, out: &mut Vec<Output>) {
        let svc_jid = req.svc.jid();
        let mut q = Element::new("query", ns::DISCO_ITEMS);
        match query.attr("node") {
            None => q.children.extend(
                self.ps_visible_nodes(&req.svc, &req.user)
                    .into_iter()
                    .map(tributary_xmpp_xml::Node::Element),
            ),
            Some(name) => {
                let Some(node) = self.pubsub.node(&req.svc, name) else {
                    deliver(
                        out,
                        req.session,
                        PsError::item_not_found().reply_to(req.stanza),
                    );
                    return;
                };
                if let Err(e) = self.ps_may_access(node, &req.user) {
                    deliver(out, req.session, e.reply_to(req.stanza));
                    return;
                }
                q.set_attr("node", name);
                for item in &node.items {
                    q.push_child(
                        Element::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", svc_jid.clone())
                            .with_attr("name", item.id.clone()),
                    );
                }
            }
        }
        deliver(out, req.session, result_for(req.stanza).with_child(q));
    }

    /// The disco#items `<item/>`s of a service's nodes `user` may access.
    fn ps_visible_nodes(&self, svc: &Service, user: &BareJid) -> Vec<Element> {
        let svc_jid = svc.jid();
        let Some(nodes) = self.pubsub.services.get(&svc_jid) else {
            return Vec::new();
        };
        nodes
            .iter()
            .filter(|(_, n)| self.ps_may_access(n, user).is_ok())
            .map(|(name, n)| {
                let mut item = Element::new("item", ns::DISCO_ITEMS)
                    .with_attr("jid", svc_jid.clone())
                    .with_attr("node", name.clone());
                if !n.config.title.is_empty() {
                    item.set_attr("name", n.config.title.clone());
                }
                item
            })
            .collect()
    }

    /// The PEP nodes of `owner` that `user` may see, for the account's
    /// disco#items (XEP-0163 §4.1 via XEP-0030).
    pub(super) fn pep_disco_items(&self, owner: &BareJid, user: &BareJid) -> Vec<Element> {
        self.ps_visible_nodes(&Service::Pep(owner.clone()), user)
    }

    /// The PEP identity and features for an account's disco#info.
    pub(super) fn pep_disco_info(query: &mut Element) {
        query.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "pubsub")
                .with_attr("type", "pep"),
        );
        query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::PUBSUB));
        for f in PEP_FEATURES {
            query.push_child(
                Element::new("feature", ns::DISCO_INFO)
                    .with_attr("var", format!("{}#{f}", ns::PUBSUB)),
            );
        }
    }

    /// A session sent available presence: its capabilities may have changed.
    pub(super) fn pep_presence(
        &mut self,
        session: SessionId,
        presence: &Element,
        out: &mut Vec<Output>,
    ) {
        let Some(full) = self.session_jid(session) else {
            return;
        };
        let user = full.to_bare();
        match self.pubsub.caps.presence(session, &user, &full, presence) {
            caps::CapsUpdate::Unchanged => {}
            caps::CapsUpdate::Resolved => self.send_last_items_on_presence(session, out),
            caps::CapsUpdate::Query(iq) => deliver(out, session, iq),
        }
    }

    /// An iq result or error addressed to the server or an account: the
    /// answer to a capabilities query? Returns whether it was one.
    pub(super) fn pep_iq_response(
        &mut self,
        session: SessionId,
        stanza: &Element,
        out: &mut Vec<Output>,
    ) -> bool {
        if !self.pubsub.caps.response(session, stanza) {
            return false;
        }
        self.send_last_items_on_presence(session, out);
        true
    }

    /// The session is gone: forget its capabilities.
    pub(super) fn pubsub_unbind(&mut self, session: SessionId) {
        self.pubsub.caps.forget(session);
    }

    /// The account is deleted: its PEP nodes and items go too.
    pub(super) fn pubsub_forget_account(&mut self, bare: &BareJid, out: &mut Vec<Output>) {
        let svc = bare.to_string();
        if let Some(nodes) = self.pubsub.services.remove(&svc) {
            for (name, node) in nodes {
                for item in &node.items {
                    store::delete_item(&svc, &name, &item.id, out);
                }
                store::delete_node(&svc, &name, out);
            }
        }
    }
}

/// The `pubsub#meta-data` form of a node's disco#info (XEP-0060 §5.4).
fn meta_form(node: &Node) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "result")
        .with_child(
            field("FORM_TYPE", "http://jabber.org/protocol/pubsub#meta-data")
                .with_attr("type", "hidden"),
        )
        .with_child(field(
            "pubsub#access_model",
            node.config.access_model.as_str(),
        ))
        .with_child(field("pubsub#title", &node.config.title));
    for o in node.owners() {
        x.push_child(field("pubsub#owner", o.as_str()));
    }
    x
}
