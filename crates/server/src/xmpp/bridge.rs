//! The bridge between XMPP and the shared routing core (docs/bridging.md).
//!
//! - Direct addressing: a message published to the `xmpp` exchange with a
//!   JID as routing key, or to `amq.topic` on the topic `xmpp/<JID>` (so
//!   MQTT clients reach XMPP users too), becomes a `<message/>` from
//!   `bridge.<domain>` to that user (stored offline if needed). A message
//!   from a user to `bridge.<domain>/<topic>` is published to `amq.topic`
//!   on that topic, with the sender's JID in the headers and as reply-to.
//! - Publish-subscribe: the pubsub service `topics.<domain>` has a node per
//!   MQTT topic filter; subscribing binds a queue to `amq.topic` with the
//!   filter, whose messages arrive as pubsub events; publishing an item to a
//!   node (a topic) publishes to that topic.
//!
//! Core deliveries reach the bridge through a [`ConsumerSink`] that only
//! queues them on a channel: a sink is called while a queue dispatches,
//! possibly on a thread that holds the hub, so the hub is only taken by the
//! bridge task.

use super::XmppContext;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use tokio::sync::mpsc;
use tributary_core::{
    Broker, ConsumerOptions, ConsumerSink, Delivery, Message, Properties, Queue, QueueOptions,
    Table, Value,
};
use tributary_mqtt::topic::{
    filter_to_routing_key, routing_key_to_topic, topic_to_routing_key, validate_topic_filter,
    validate_topic_name,
};
use tributary_store::Store;
use tributary_xmpp::c2s::{iq_error, stanza_error_child};
use tributary_xmpp::ns;
use tributary_xmpp_xml::Element;

/// The topic exchange MQTT lives on.
pub const TOPIC_EXCHANGE: &str = "amq.topic";
/// The topic prefix that addresses XMPP users from MQTT (`xmpp/<JID>`).
pub const TOPIC_PREFIX: &str = "xmpp";
/// The queue carrying direct messages to XMPP users.
const DIRECT_QUEUE: &str = "xmpp-bridge";
/// Metadata table of pubsub subscriptions (`<bare JID>\n<node>` → subid).
pub const PUBSUB_TABLE: &str = "xmpp_pubsub";
/// Deliveries handed to the bridge task and not yet settled.
const INFLIGHT: u32 = 1024;

/// XEP-0060 namespaces.
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0131 stanza headers: how AMQP headers and MQTT user properties travel.
const SHIM: &str = "http://jabber.org/protocol/shim";
/// Our payload wrapper inside pubsub items.
pub const PAYLOAD_NS: &str = "urn:tributary:bridge:0";
/// Header naming the XMPP sender of a bridged message.
pub const FROM_HEADER: &str = "xmpp-from";

/// Where a delivery goes.
#[derive(Clone)]
enum Target {
    /// A JID taken from the routing key.
    Direct,
    /// A pubsub subscription's events.
    Pubsub {
        jid: String,
        node: String,
        subid: String,
    },
}

/// A delivery waiting for the bridge task.
pub struct Inbound {
    delivery: Delivery,
    target: Target,
}

struct BridgeSink {
    tx: mpsc::UnboundedSender<Inbound>,
    target: Target,
    inflight: Arc<AtomicU32>,
    live: AtomicBool,
}

impl ConsumerSink for BridgeSink {
    fn try_reserve(&self) -> bool {
        self.live.load(Ordering::Acquire)
            && self
                .inflight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < INFLIGHT).then_some(n + 1)
                })
                .is_ok()
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        let inbound = Inbound {
            delivery,
            target: self.target.clone(),
        };
        self.tx.send(inbound).map_err(|e| {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            e.0.delivery
        })
    }

    fn cancelled(&self) {
        self.live.store(false, Ordering::Release);
    }

    fn unreserve(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Subscription {
    queue: Arc<Queue>,
    subid: String,
}

/// The bridge's state: its queues and the pubsub subscriptions.
pub struct Bridge {
    /// The XMPP domain's vhost (`[xmpp] vhost`), where the bridge routes.
    vhost: Arc<tributary_core::VHost>,
    store: Arc<Store>,
    users: Arc<crate::users::UserDb>,
    /// `bridge.<domain>`: direct messages to and from the core.
    pub direct_domain: String,
    /// `topics.<domain>`: the pubsub service over MQTT topics.
    pub pubsub_domain: String,
    exchange: String,
    domain: String,
    conn: u64,
    tx: mpsc::UnboundedSender<Inbound>,
    inflight: Arc<AtomicU32>,
    subscriptions: Mutex<HashMap<(String, String), Subscription>>,
    next_item: AtomicU64,
}

impl Bridge {
    /// Declares the bridge's exchange and queue, restores pubsub
    /// subscriptions, and returns the channel the bridge task drains.
    pub fn start(
        broker: Arc<Broker>,
        store: Arc<Store>,
        users: Arc<crate::users::UserDb>,
        vhost: Arc<tributary_core::VHost>,
        domain: &str,
        exchange: &str,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<Inbound>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let bridge = Arc::new(Bridge {
            conn: broker.next_connection_id(),
            vhost,
            store,
            users,
            direct_domain: format!("bridge.{domain}"),
            pubsub_domain: format!("topics.{domain}"),
            exchange: exchange.to_string(),
            domain: domain.to_string(),
            tx,
            inflight: Arc::new(AtomicU32::new(0)),
            subscriptions: Mutex::new(HashMap::new()),
            next_item: AtomicU64::new(1),
        });
        let vhost = bridge.vhost.clone();
        vhost
            .declare_exchange(exchange, "topic", false, |kind| {
                tributary_core::exchange::ExchangeOptions {
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: Table::default(),
                    delayed: false,
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot declare the XMPP bridge exchange: {e:?}"))?;
        let queue = vhost
            .declare_queue(
                DIRECT_QUEUE,
                false,
                QueueOptions {
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: Table::default(),
                },
                bridge.conn,
            )
            .map_err(|e| anyhow::anyhow!("cannot declare the XMPP bridge queue: {e:?}"))?
            .queue;
        let bind = |exchange: &str, key: &str| {
            vhost
                .bind_queue(DIRECT_QUEUE, exchange, key, Table::default(), bridge.conn)
                .map_err(|e| anyhow::anyhow!("cannot bind the XMPP bridge queue: {e:?}"))
        };
        bind(exchange, "#")?;
        bind(TOPIC_EXCHANGE, &format!("{TOPIC_PREFIX}.#"))?;
        bridge.consume(&queue, Target::Direct)?;
        for (key, subid) in bridge.store.meta_list(PUBSUB_TABLE)? {
            let Some((jid, node)) = key.split_once('\n') else {
                continue;
            };
            let subid = String::from_utf8_lossy(&subid).into_owned();
            if let Err(e) = bridge.subscribe_core(jid, node, &subid) {
                tracing::warn!(jid, node, error = %e, "cannot restore a pubsub subscription");
            }
        }
        Ok((bridge, rx))
    }

    fn consume(&self, queue: &Arc<Queue>, target: Target) -> anyhow::Result<()> {
        let sink = Arc::new(BridgeSink {
            tx: self.tx.clone(),
            target,
            inflight: self.inflight.clone(),
            live: AtomicBool::new(true),
        });
        queue
            .add_consumer(
                "xmpp-bridge".into(),
                self.conn,
                0,
                ConsumerOptions::default(),
                sink,
            )
            .map_err(|e| anyhow::anyhow!("cannot consume {}: {e:?}", queue.name()))?;
        Ok(())
    }

    fn subscribe_core(&self, jid: &str, node: &str, subid: &str) -> anyhow::Result<()> {
        let vhost = self.vhost.clone();
        let name = format!("xmpp-pubsub-{subid}");
        let queue = vhost
            .declare_queue(
                &name,
                false,
                QueueOptions {
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    arguments: Table::default(),
                },
                self.conn,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .queue;
        vhost
            .bind_queue(
                &name,
                TOPIC_EXCHANGE,
                &filter_to_routing_key(node),
                Table::default(),
                self.conn,
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        self.consume(
            &queue,
            Target::Pubsub {
                jid: jid.to_string(),
                node: node.to_string(),
                subid: subid.to_string(),
            },
        )?;
        self.subscriptions.lock().insert(
            (jid.to_string(), node.to_string()),
            Subscription {
                queue,
                subid: subid.to_string(),
            },
        );
        Ok(())
    }

    /// Whether the sender of `stanza` (a local user) has `access` to
    /// `amq.topic` in the default vhost: the bridge applies the same
    /// permissions as AMQP and MQTT.
    fn may(&self, stanza: &Element, access: crate::users::Access) -> bool {
        let from = stanza.attr("from").unwrap_or("");
        let user = from.split(['@', '/']).next().unwrap_or("");
        self.users
            .check(user, self.vhost.name(), access, TOPIC_EXCHANGE)
    }

    /// A stanza from a local user to a bridge domain; returns the replies
    /// for the sender.
    pub fn handle_xmpp(&self, stanza: &Element) -> Vec<Element> {
        let to = stanza.attr("to").unwrap_or("");
        let (domain, resource) = match to.split_once('/') {
            Some((d, r)) => (d, Some(r)),
            None => (to, None),
        };
        let domain = domain.rsplit('@').next().unwrap_or(domain);
        let is_iq = stanza.is("iq", ns::CLIENT);
        let kind = stanza.attr("type").unwrap_or("");
        if is_iq && matches!(kind, "result" | "error") {
            return Vec::new();
        }
        if domain == self.pubsub_domain {
            return if is_iq {
                vec![self.pubsub_iq(stanza)]
            } else {
                error_reply(stanza, "cancel", "service-unavailable")
            };
        }
        if is_iq {
            return vec![self.direct_iq(stanza)];
        }
        if kind == "error" {
            return Vec::new();
        }
        match resource.filter(|t| validate_topic_name(t).is_ok()) {
            Some(_) if !self.may(stanza, crate::users::Access::Write) => {
                error_reply(stanza, "auth", "forbidden")
            }
            Some(topic) => {
                self.publish_message(stanza, topic);
                Vec::new()
            }
            None => error_reply(stanza, "modify", "jid-malformed"),
        }
    }

    /// `<message to='bridge.<domain>/<topic>'>`: its body is published to
    /// the topic. A message without a body (a chat state, a receipt) is not.
    fn publish_message(&self, stanza: &Element, topic: &str) {
        let Some(body) = stanza.child("body", ns::CLIENT).map(Element::text) else {
            return;
        };
        let correlation = stanza
            .child("thread", ns::CLIENT)
            .map(Element::text)
            .or_else(|| stanza.attr("id").map(str::to_string));
        let from = stanza.attr("from").unwrap_or("");
        let headers = shim_headers(stanza.child("headers", SHIM), from);
        self.publish(topic, Bytes::from(body), headers, correlation, from);
    }

    fn publish(
        &self,
        topic: &str,
        body: Bytes,
        headers: Table,
        correlation: Option<String>,
        from: &str,
    ) {
        let properties = Properties {
            delivery_mode: Some(2),
            headers: Some(headers),
            correlation_id: correlation.map(Bytes::from),
            reply_to: Some(Bytes::from(topic_to_routing_key(&format!(
                "{TOPIC_PREFIX}/{from}"
            )))),
            ..Default::default()
        };
        let message = Message::new(
            Bytes::from_static(TOPIC_EXCHANGE.as_bytes()),
            Bytes::from(topic_to_routing_key(topic)),
            properties,
            body,
        );
        let vhost = &self.vhost;
        let mut routed = tributary_core::Routed::default();
        if vhost
            .route(
                TOPIC_EXCHANGE,
                &message.routing_key,
                &message.properties,
                &mut routed,
            )
            .is_ok()
        {
            vhost.enqueue(&message, &routed.queues);
        }
    }

    fn direct_iq(&self, iq: &Element) -> Element {
        if iq.attr("type") == Some("get") && iq.child("query", ns::DISCO_INFO).is_some() {
            let query = Element::new("query", ns::DISCO_INFO)
                .with_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "gateway")
                        .with_attr("type", "amqp")
                        .with_attr("name", "Tributary bridge to AMQP and MQTT"),
                )
                .with_child(
                    Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO),
                );
            return result(iq).with_child(query);
        }
        reply_error(iq, "cancel", "service-unavailable")
    }

    fn pubsub_iq(&self, iq: &Element) -> Element {
        let kind = iq.attr("type").unwrap_or("");
        if kind == "get" && iq.child("query", ns::DISCO_INFO).is_some() {
            let mut query = Element::new("query", ns::DISCO_INFO).with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "pubsub")
                    .with_attr("type", "service")
                    .with_attr("name", "MQTT topics"),
            );
            for var in [
                ns::DISCO_INFO,
                PUBSUB,
                "http://jabber.org/protocol/pubsub#subscribe",
                "http://jabber.org/protocol/pubsub#publish",
                "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
            ] {
                query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", var));
            }
            return result(iq).with_child(query);
        }
        if kind == "get" && iq.child("query", ns::DISCO_ITEMS).is_some() {
            return result(iq).with_child(Element::new("query", ns::DISCO_ITEMS));
        }
        let Some(pubsub) = iq.child("pubsub", PUBSUB) else {
            return reply_error(iq, "cancel", "service-unavailable");
        };
        let from = iq.attr("from").unwrap_or("");
        let bare = from.split('/').next().unwrap_or(from).to_string();
        let Some(op) = pubsub.elements().next() else {
            return reply_error(iq, "modify", "bad-request");
        };
        let needed = match op.name.as_str() {
            "publish" => crate::users::Access::Write,
            _ => crate::users::Access::Read,
        };
        if !self.may(iq, needed) {
            return reply_error(iq, "auth", "forbidden");
        }
        match (kind, op.name.as_str()) {
            ("set", "subscribe") => self.subscribe(iq, op, &bare),
            ("set", "unsubscribe") => self.unsubscribe(iq, op, &bare),
            ("get", "subscriptions") => self.list_subscriptions(iq, &bare),
            ("set", "publish") => self.publish_item(iq, op, from),
            _ => pubsub_error(iq, "cancel", "feature-not-implemented", None),
        }
    }

    fn subscribe(&self, iq: &Element, op: &Element, bare: &str) -> Element {
        let node = op.attr("node").unwrap_or("");
        let jid = op.attr("jid").unwrap_or("");
        if node.is_empty() || validate_topic_filter(node).is_err() {
            return pubsub_error(iq, "modify", "bad-request", Some("nodeid-required"));
        }
        if jid.split('/').next() != Some(bare) {
            return pubsub_error(iq, "modify", "bad-request", Some("invalid-jid"));
        }
        let key = (bare.to_string(), node.to_string());
        let existing = self.subscriptions.lock().get(&key).map(|s| s.subid.clone());
        let subid = match existing {
            Some(subid) => subid,
            None => {
                let subid = uuid::Uuid::new_v4().simple().to_string();
                if let Err(e) =
                    self.store
                        .meta_put(PUBSUB_TABLE, &format!("{bare}\n{node}"), subid.as_bytes())
                {
                    tracing::error!(error = %e, "cannot persist a pubsub subscription");
                    return reply_error(iq, "wait", "internal-server-error");
                }
                if let Err(e) = self.subscribe_core(bare, node, &subid) {
                    tracing::error!(error = %e, "cannot create a pubsub subscription");
                    return reply_error(iq, "wait", "internal-server-error");
                }
                subid
            }
        };
        result(iq).with_child(
            Element::new("pubsub", PUBSUB).with_child(
                Element::new("subscription", PUBSUB)
                    .with_attr("node", node)
                    .with_attr("jid", bare)
                    .with_attr("subid", subid)
                    .with_attr("subscription", "subscribed"),
            ),
        )
    }

    fn unsubscribe(&self, iq: &Element, op: &Element, bare: &str) -> Element {
        let node = op.attr("node").unwrap_or("");
        let key = (bare.to_string(), node.to_string());
        let Some(sub) = self.subscriptions.lock().remove(&key) else {
            return pubsub_error(iq, "cancel", "unexpected-request", Some("not-subscribed"));
        };
        let vhost = &self.vhost;
        vhost.remove_queue(&sub.queue);
        if let Err(e) = self
            .store
            .meta_delete(PUBSUB_TABLE, &format!("{bare}\n{node}"))
        {
            tracing::error!(error = %e, "cannot delete a pubsub subscription");
        }
        result(iq)
    }

    fn list_subscriptions(&self, iq: &Element, bare: &str) -> Element {
        let mut list = Element::new("subscriptions", PUBSUB);
        let subs = self.subscriptions.lock();
        let mut mine: Vec<_> = subs.iter().filter(|((j, _), _)| j == bare).collect();
        mine.sort_by(|a, b| a.0.1.cmp(&b.0.1));
        for ((jid, node), sub) in mine {
            list.push_child(
                Element::new("subscription", PUBSUB)
                    .with_attr("node", node.clone())
                    .with_attr("jid", jid.clone())
                    .with_attr("subid", sub.subid.clone())
                    .with_attr("subscription", "subscribed"),
            );
        }
        result(iq).with_child(Element::new("pubsub", PUBSUB).with_child(list))
    }

    fn publish_item(&self, iq: &Element, op: &Element, from: &str) -> Element {
        let node = op.attr("node").unwrap_or("");
        if node.is_empty() || validate_topic_name(node).is_err() {
            return pubsub_error(iq, "modify", "bad-request", Some("nodeid-required"));
        }
        let item = op.child("item", PUBSUB);
        let payload = item.and_then(|i| i.child("payload", PAYLOAD_NS));
        let body = match payload {
            Some(p) => match decode_payload(p) {
                Some(body) => body,
                None => return pubsub_error(iq, "modify", "bad-request", Some("invalid-payload")),
            },
            None => Bytes::from(item.map(item_text).unwrap_or_default()),
        };
        let headers = shim_headers(payload.and_then(|p| p.child("headers", SHIM)), from);
        let id = item
            .and_then(|i| i.attr("id"))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        self.publish(node, body, headers, None, from);
        result(iq).with_child(
            Element::new("pubsub", PUBSUB).with_child(
                Element::new("publish", PUBSUB)
                    .with_attr("node", node)
                    .with_child(Element::new("item", PUBSUB).with_attr("id", id)),
            ),
        )
    }

    /// The stanza a core delivery becomes, if its address is usable.
    fn to_stanza(&self, inbound: &Inbound) -> Option<Element> {
        let message = &inbound.delivery.entry.message;
        let key = String::from_utf8_lossy(&message.routing_key).into_owned();
        match &inbound.target {
            Target::Direct => {
                let jid = if message.exchange.as_ref() == self.exchange.as_bytes() {
                    key.clone()
                } else {
                    jid_from_topic_key(&key, &self.domain)?
                };
                let from = match message
                    .properties
                    .reply_to
                    .as_ref()
                    .filter(|r| !r.is_empty())
                {
                    Some(reply_to) => format!(
                        "{}/{}",
                        self.direct_domain,
                        routing_key_to_topic(&String::from_utf8_lossy(reply_to))
                    ),
                    None => self.direct_domain.clone(),
                };
                let mut stanza = Element::new("message", ns::CLIENT)
                    .with_attr("from", from)
                    .with_attr("to", jid)
                    .with_attr("id", format!("bridge-{}", self.next_item()));
                let (text, base64) = body_text(&message.body);
                stanza.push_child(Element::new("body", ns::CLIENT).with_text(text));
                if let Some(correlation) = &message.properties.correlation_id {
                    stanza.push_child(
                        Element::new("thread", ns::CLIENT)
                            .with_text(String::from_utf8_lossy(correlation)),
                    );
                }
                if let Some(headers) = headers_element(&message.properties, &key, base64) {
                    stanza.push_child(headers);
                }
                Some(stanza)
            }
            Target::Pubsub { jid, node, subid } => {
                let topic = routing_key_to_topic(&key);
                let (text, base64) = body_text(&message.body);
                let mut payload = Element::new("payload", PAYLOAD_NS).with_attr("topic", topic);
                if base64 {
                    payload.set_attr("encoding", "base64");
                }
                if let Some(ct) = &message.properties.content_type {
                    payload.set_attr("content-type", String::from_utf8_lossy(ct));
                }
                payload.push_child(Element::new("body", PAYLOAD_NS).with_text(text));
                if let Some(headers) = headers_element(&message.properties, &key, false) {
                    payload.push_child(headers);
                }
                let item = Element::new("item", PUBSUB_EVENT)
                    .with_attr("id", format!("{}", self.next_item()))
                    .with_child(payload);
                let event = Element::new("event", PUBSUB_EVENT).with_child(
                    Element::new("items", PUBSUB_EVENT)
                        .with_attr("node", node.clone())
                        .with_child(item),
                );
                let shim = Element::new("headers", SHIM).with_child(
                    Element::new("header", SHIM)
                        .with_attr("name", "SubID")
                        .with_text(subid.clone()),
                );
                Some(
                    Element::new("message", ns::CLIENT)
                        .with_attr("from", self.pubsub_domain.clone())
                        .with_attr("to", jid.clone())
                        .with_attr("id", format!("bridge-{}", self.next_item()))
                        .with_child(event)
                        .with_child(shim),
                )
            }
        }
    }

    fn next_item(&self) -> u64 {
        self.next_item.fetch_add(1, Ordering::Relaxed)
    }

    fn settle(&self, delivery: &Delivery) {
        delivery.queue.settle(&delivery.entry);
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        delivery.queue.dispatch();
    }
}

/// Moves core deliveries into the hub until the channel closes.
pub async fn run(ctx: Arc<XmppContext>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    loop {
        let inbound = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            inbound = rx.recv() => match inbound {
                Some(inbound) => inbound,
                None => return,
            },
        };
        let Some(bridge) = ctx.bridge() else { return };
        match bridge.to_stanza(&inbound) {
            Some(stanza) => {
                if !ctx.deliver_from_bridge(stanza) {
                    tracing::debug!("bridged message had no local recipient; dropped");
                }
            }
            None => tracing::debug!("bridged message without a JID address; dropped"),
        }
        bridge.settle(&inbound.delivery);
    }
}

/// The JID in a routing key `xmpp.<JID>` from `amq.topic`. MQTT keeps a
/// `.` inside a topic level, so `xmpp/alice@example.org/phone` arrives as
/// `xmpp.alice@example.org.phone`: the domain is known (only local users are
/// reachable), and what follows it is the resource.
fn jid_from_topic_key(key: &str, domain: &str) -> Option<String> {
    let rest = key.strip_prefix(TOPIC_PREFIX)?.strip_prefix('.')?;
    let (node, after) = rest.split_once('@')?;
    let tail = after.strip_prefix(domain)?;
    if tail.is_empty() {
        return Some(format!("{node}@{domain}"));
    }
    let resource = tail.strip_prefix(['.', '/'])?;
    (!resource.is_empty()).then(|| format!("{node}@{domain}/{resource}"))
}

fn result(iq: &Element) -> Element {
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        reply.set_attr("id", id);
    }
    swap_addresses(iq, &mut reply);
    reply
}

fn swap_addresses(request: &Element, reply: &mut Element) {
    if let Some(to) = request.attr("to") {
        reply.set_attr("from", to);
    }
    if let Some(from) = request.attr("from") {
        reply.set_attr("to", from);
    }
}

fn reply_error(iq: &Element, kind: &str, condition: &str) -> Element {
    let mut reply = iq_error(iq, kind, condition);
    swap_addresses(iq, &mut reply);
    reply
}

fn pubsub_error(iq: &Element, kind: &str, condition: &str, specific: Option<&str>) -> Element {
    let mut reply = reply_error(iq, kind, condition);
    if let Some(specific) = specific
        && let Some(error) = reply.child_mut("error", ns::CLIENT)
    {
        error.push_child(Element::new(specific, PUBSUB_ERRORS));
    }
    reply
}

fn error_reply(stanza: &Element, kind: &str, condition: &str) -> Vec<Element> {
    if stanza.attr("type") == Some("error") {
        return Vec::new();
    }
    let mut reply = stanza.clone();
    reply.set_attr("type", "error");
    swap_addresses(stanza, &mut reply);
    reply.push_child(stanza_error_child(kind, condition, None));
    vec![reply]
}

fn item_text(item: &Element) -> String {
    let mut text = item.text();
    for child in item.elements() {
        text.push_str(&child.text());
    }
    text.trim().to_string()
}

fn decode_payload(payload: &Element) -> Option<Bytes> {
    let text = payload
        .child("body", PAYLOAD_NS)
        .map(Element::text)
        .unwrap_or_else(|| payload.text());
    match payload.attr("encoding") {
        Some("base64") => B64.decode(text.trim()).ok().map(Bytes::from),
        None | Some("utf-8") => Some(Bytes::from(text)),
        Some(_) => None,
    }
}

/// A body as XML text: itself when it is UTF-8 XML can carry, else base64.
fn body_text(body: &Bytes) -> (String, bool) {
    match std::str::from_utf8(body) {
        Ok(text) if text.chars().all(xml_char) => (text.to_string(), false),
        _ => (B64.encode(body), true),
    }
}

fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

/// XEP-0131 headers from an AMQP message: its string headers (MQTT user
/// properties), content type, correlation id and topic.
fn headers_element(properties: &Properties, key: &str, base64: bool) -> Option<Element> {
    let mut headers = Element::new("headers", SHIM);
    let mut add = |name: &str, value: String| {
        headers.push_child(
            Element::new("header", SHIM)
                .with_attr("name", name)
                .with_text(value),
        );
    };
    add("Topic", routing_key_to_topic(key));
    if let Some(ct) = &properties.content_type {
        add("Content-Type", String::from_utf8_lossy(ct).into_owned());
    }
    if let Some(correlation) = &properties.correlation_id {
        add(
            "Correlation-Id",
            String::from_utf8_lossy(correlation).into_owned(),
        );
    }
    if base64 {
        add("Content-Transfer-Encoding", "base64".to_string());
    }
    if let Some(table) = &properties.headers {
        for (name, value) in table.iter() {
            if name.starts_with("x-mqtt-") {
                continue;
            }
            if let Some(text) = value.as_str() {
                add(name, text.to_string());
            }
        }
    }
    Some(headers)
}

/// AMQP headers from XEP-0131 headers, plus the sender's JID.
fn shim_headers(headers: Option<&Element>, from: &str) -> Table {
    let mut table = Table::default();
    if let Some(headers) = headers {
        for header in headers.elements().filter(|h| h.is("header", SHIM)) {
            if let Some(name) = header.attr("name")
                && !name.is_empty()
                && name.len() < 256
                && name != FROM_HEADER
            {
                table.insert(name.to_string(), Value::LongStr(Bytes::from(header.text())));
            }
        }
    }
    table.insert(
        FROM_HEADER,
        Value::LongStr(Bytes::copy_from_slice(from.as_bytes())),
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jids_come_back_from_topic_routing_keys() {
        let key = |topic: &str| topic_to_routing_key(topic);
        assert_eq!(
            jid_from_topic_key(&key("xmpp/alice@example.org"), "example.org").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(
            jid_from_topic_key(&key("xmpp/alice@example.org/phone.1"), "example.org").as_deref(),
            Some("alice@example.org/phone.1")
        );
        assert_eq!(
            jid_from_topic_key(&key("xmpp/alice@other.org"), "example.org"),
            None
        );
        assert_eq!(jid_from_topic_key(&key("xmpp/alice"), "example.org"), None);
        assert_eq!(
            jid_from_topic_key(&key("other/alice@example.org"), "example.org"),
            None
        );
        assert_eq!(
            jid_from_topic_key(&key("xmpp/alice@example.orgx"), "example.org"),
            None
        );
    }

    #[test]
    fn bodies_that_xml_cannot_carry_become_base64() {
        assert_eq!(
            body_text(&Bytes::from_static(b"21.5")),
            ("21.5".into(), false)
        );
        assert_eq!(
            body_text(&Bytes::from_static(b"\x00\xff")),
            ("AP8=".into(), true)
        );
        assert!(body_text(&Bytes::from_static(b"bell\x07")).1);
    }

    #[test]
    fn shim_headers_carry_the_sender_and_cannot_spoof_it() {
        let headers = Element::new("headers", SHIM)
            .with_child(
                Element::new("header", SHIM)
                    .with_attr("name", "k")
                    .with_text("v"),
            )
            .with_child(
                Element::new("header", SHIM)
                    .with_attr("name", FROM_HEADER)
                    .with_text("mallory@localhost"),
            );
        let table = shim_headers(Some(&headers), "alice@localhost/r");
        assert_eq!(table.get("k").and_then(Value::as_str), Some("v"));
        assert_eq!(
            table.get(FROM_HEADER).and_then(Value::as_str),
            Some("alice@localhost/r")
        );
    }
}
