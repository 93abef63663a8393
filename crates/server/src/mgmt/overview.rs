//! Read-mostly endpoints: overview, nodes, connections (and closing one),
//! channels, consumers, health checks, and the MQTT and XMPP sessions.

use super::auth::Caller;
use super::json::queue_json;
use super::{ApiError, ApiResult, St};
use crate::registry::{ConnInfo, Protocol};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value as J, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// This node's name, `tributary@<hostname>`, as RabbitMQ's `rabbit@host`.
pub fn node_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("tributary@{host}")
    })
}

/// Resident memory and open file descriptors of this process, from /proc.
pub fn process_usage() -> (u64, u64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    (rss, fds)
}

/// The connections the caller may see: all for administrators and
/// monitoring users, their own for management users.
fn visible_connections(st: &St, caller: &Caller) -> Vec<Arc<ConnInfo>> {
    st.s.registry
        .list()
        .into_iter()
        .filter(|c| caller.sees_all() || c.user() == caller.name)
        .collect()
}

fn connection_json(c: &ConnInfo) -> J {
    let [recv_oct, send_oct, recv_cnt, send_cnt] = c.counters.snapshot();
    let local = c.transport.local;
    json!({
        "name": c.name(),
        "node": node_name(),
        "type": "network",
        "state": "running",
        "protocol": c.protocol.display(),
        "tributary_protocol": c.protocol.as_str(),
        "transport": if c.transport.websocket { "websocket" } else { "tcp" },
        "user": c.user(),
        "vhost": c.vhost(),
        "client_id": c.client(),
        "host": local.map(|l| l.ip().to_string()),
        "port": c.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": c.tls(),
        "channels": c.channels().len(),
        "connected_at": c.connected_at,
        "recv_oct": recv_oct,
        "send_oct": send_oct,
        "recv_cnt": recv_cnt,
        "send_cnt": send_cnt,
        "client_properties": {},
    })
}

/// GET /api/overview.
pub async fn overview(State(st): State<St>, caller: Caller) -> Json<J> {
    let (mut ready, mut unacked, mut queues, mut exchanges, mut consumers) = (0, 0, 0, 0, 0);
    let (mut published, mut delivered, mut acked, mut redelivered) = (0u64, 0u64, 0u64, 0u64);
    for v in st.s.broker.vhosts() {
        if !caller.sees_vhost(v.name()) {
            continue;
        }
        exchanges += v.exchanges().len();
        for q in v.queues() {
            let s = q.stats();
            let c = q.counters();
            ready += s.ready;
            unacked += s.unacked;
            consumers += s.consumers;
            queues += 1;
            published += c.published.load(Ordering::Relaxed);
            delivered += c.delivered.load(Ordering::Relaxed);
            acked += c.acked.load(Ordering::Relaxed);
            redelivered += c.redelivered.load(Ordering::Relaxed);
        }
    }
    let conns = visible_connections(&st, &caller);
    let channels: usize = conns.iter().map(|c| c.channels().len()).sum();
    let cfg = &st.s.config;
    let listeners: Vec<J> = [
        ("amqp", cfg.amqp_addr()),
        ("mqtt", cfg.mqtt_addr()),
        ("mqtt/ssl", cfg.mqtts_addr()),
        ("xmpp", cfg.xmpp_addr()),
        ("xmpp/ssl", cfg.xmpps_addr()),
        ("http", cfg.http_addr()),
    ]
    .into_iter()
    .filter_map(|(p, a)| {
        a.map(|a| json!({"node": node_name(), "protocol": p, "ip_address": a.ip().to_string(), "port": a.port()}))
    })
    .collect();
    let mut message_stats = json!({
        "publish": published,
        "deliver_get": delivered,
        "ack": acked,
        "redeliver": redelivered,
    });
    super::rates::add_details(&mut message_stats, st.rates.overall());
    Json(json!({
        "management_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": "3.13.0",
        "product_name": "Tributary",
        "product_version": env!("CARGO_PKG_VERSION"),
        "cluster_name": node_name(),
        "node": node_name(),
        "erlang_version": "n/a",
        "uptime": st.started.elapsed().as_millis() as u64,
        "message_stats": message_stats,
        "protocols": protocols_json(&st, &conns),
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
        "object_totals": {
            "connections": conns.len(),
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues,
            "consumers": consumers,
        },
        "listeners": listeners,
        "contexts": [],
    }))
}

/// Tributary's per-protocol figures in the overview: connections, sessions
/// (AMQP channels, connected MQTT client ids, bound XMPP resources),
/// message totals over open and closed connections, and their rates.
fn protocols_json(st: &St, conns: &[Arc<ConnInfo>]) -> J {
    let mut out = serde_json::Map::new();
    for p in Protocol::ALL {
        let mine: Vec<_> = conns.iter().filter(|c| c.protocol == p).collect();
        let sessions = match p {
            Protocol::Amqp => mine.iter().map(|c| c.channels().len()).sum(),
            _ => mine.iter().filter(|c| !c.client().is_empty()).count(),
        };
        let [recv_oct, send_oct, published, delivered] = st.s.registry.totals(p);
        let [publish_rate, deliver_rate] = st.rates.protocol(p);
        out.insert(
            p.as_str().to_string(),
            json!({
                "connections": mine.len(),
                "sessions": sessions,
                "recv_oct": recv_oct,
                "send_oct": send_oct,
                "messages_published": published,
                "messages_delivered": delivered,
                "publish_details": { "rate": publish_rate },
                "deliver_details": { "rate": deliver_rate },
            }),
        );
    }
    J::Object(out)
}

fn node_json(st: &St) -> J {
    let (rss, fds) = process_usage();
    json!({
        "name": node_name(),
        "type": "disc",
        "running": true,
        "mem_used": rss,
        "fd_used": fds,
        "uptime": st.started.elapsed().as_millis() as u64,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "mem_alarm": false,
        "disk_free_alarm": false,
    })
}

/// GET /api/nodes.
pub async fn nodes(State(st): State<St>, _caller: Caller) -> Json<J> {
    Json(J::Array(vec![node_json(&st)]))
}

/// GET /api/nodes/{node}.
pub async fn node(
    State(st): State<St>,
    _caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    if name != node_name() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(node_json(&st)))
}

/// GET /api/connections.
pub async fn connections(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        visible_connections(&st, &caller)
            .iter()
            .map(|c| with_coap(&st, c, connection_json(c)))
            .collect(),
    ))
}

/// A CoAP peer's row also counts its observations (`coap_observations`).
fn with_coap(st: &St, c: &ConnInfo, mut row: J) -> J {
    if c.protocol == Protocol::Coap {
        row["coap_observations"] = json!(st.s.coap.count_for(&c.name()));
    }
    row
}

/// GET /api/coap/observations: every CoAP observation the caller may see
/// (administrators and monitoring users all, others their own).
pub async fn coap_observations(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        st.s.coap
            .list()
            .into_iter()
            .filter(|o| caller.sees_all() || o.user == caller.name)
            .map(|o| {
                json!({
                    "connection": o.connection,
                    "peer_host": o.peer.ip().to_string(),
                    "peer_port": o.peer.port(),
                    "user": o.user,
                    "vhost": o.vhost,
                    "topic_filter": o.filter,
                    "queue": o.queue,
                    "confirmable": o.confirmable,
                    "since": o.since,
                    "notifications": o.notifications(),
                })
            })
            .collect(),
    ))
}

/// GET /api/connections/{name}.
pub async fn connection(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<J>> {
    let c = st.s.registry.find(&name).ok_or(ApiError::NotFound)?;
    if !caller.sees_all() && c.user() != caller.name {
        return Err(ApiError::NotFound);
    }
    Ok(Json(with_coap(&st, &c, connection_json(&c))))
}

/// DELETE /api/connections/{name}: closes it the protocol's way (AMQP 320
/// CONNECTION_FORCED, MQTT 5 DISCONNECT 0x98, XMPP `<policy-violation/>`);
/// an `X-Reason` header replaces the default reason.
pub async fn close_connection(
    State(st): State<St>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let c = st.s.registry.find(&name).ok_or(ApiError::NotFound)?;
    if !caller.is_admin() && c.user() != caller.name {
        return Err(ApiError::NotFound);
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    tracing::info!(connection = %name, user = %caller.name, reason, "closing a connection on request");
    c.request_close(reason);
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/channels.
pub async fn channels(State(st): State<St>, caller: Caller) -> Json<J> {
    let mut out = Vec::new();
    for c in visible_connections(&st, &caller) {
        let name = c.name();
        for n in c.channels() {
            out.push(json!({
                "name": format!("{name} ({n})"),
                "number": n,
                "node": node_name(),
                "user": c.user(),
                "vhost": c.vhost(),
                "state": "running",
                "connection_details": {
                    "name": name,
                    "peer_host": c.peer.ip().to_string(),
                    "peer_port": c.peer.port(),
                },
            }));
        }
    }
    Json(J::Array(out))
}

fn consumers_json(st: &St, caller: &Caller, only: Option<&str>) -> ApiResult<Vec<J>> {
    if let Some(v) = only
        && (st.s.broker.vhost(v).is_none() || !caller.sees_vhost(v))
    {
        return Err(ApiError::NotFound);
    }
    let mut out = Vec::new();
    for v in st.s.broker.vhosts() {
        if only.is_some_and(|o| o != v.name()) || !caller.sees_vhost(v.name()) {
            continue;
        }
        for q in v.queues() {
            for (tag, _owner, channel, options) in q.consumers() {
                out.push(json!({
                    "consumer_tag": &*tag,
                    "queue": { "name": q.name(), "vhost": v.name() },
                    "channel_details": { "number": channel },
                    "ack_required": !options.no_ack,
                    "exclusive": options.exclusive,
                    "prefetch_count": 0,
                    "active": true,
                    "arguments": { "x-priority": options.priority },
                }));
            }
        }
    }
    Ok(out)
}

/// GET /api/consumers.
pub async fn consumers(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    Ok(Json(J::Array(consumers_json(&st, &caller, None)?)))
}

/// GET /api/consumers/{vhost}.
pub async fn consumers_in(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    Ok(Json(J::Array(consumers_json(&st, &caller, Some(&vhost))?)))
}

/// GET /api/healthchecks/node: the broker answers, and its store works.
pub async fn healthcheck(State(st): State<St>, _caller: Caller) -> (StatusCode, Json<J>) {
    if st.s.store.stats().failed {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "the message store failed"})),
        );
    }
    (StatusCode::OK, Json(json!({"status": "ok"})))
}

/// GET /api/aliveness-test/{vhost}: declares `aliveness-test`, publishes a
/// message to it and gets it back, as RabbitMQ does.
pub async fn aliveness(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    let v = st.s.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    if !caller.sees_vhost(&vhost) {
        return Err(ApiError::NotFound);
    }
    let options = tributary_core::QueueOptions::default();
    let q = v.declare_queue("aliveness-test", false, options, 0)?.queue;
    let body = bytes::Bytes::from_static(b"test_message");
    let message = tributary_core::Message::new(
        bytes::Bytes::new(),
        bytes::Bytes::from_static(b"aliveness-test"),
        tributary_core::Properties::default(),
        body.clone(),
    );
    v.enqueue(&message, std::slice::from_ref(&q));
    match q.get(true) {
        Some((e, _)) if e.message.body == body => Ok(Json(json!({"status": "ok"}))),
        _ => Ok(Json(
            json!({"status": "failed", "reason": "the test message did not come back"}),
        )),
    }
}

/// GET /api/mqtt/sessions: connected MQTT clients and the persistent
/// sessions waiting for theirs.
pub async fn mqtt_sessions(State(st): State<St>, caller: Caller) -> Json<J> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in visible_connections(&st, &caller) {
        if c.protocol != Protocol::Mqtt || c.client().is_empty() {
            continue;
        }
        seen.insert(c.client());
        out.push(json!({
            "client_id": c.client(),
            "connected": true,
            "user": c.user(),
            "connection": c.name(),
            "peer_host": c.peer.ip().to_string(),
            "transport": if c.transport.websocket { "websocket" } else { "tcp" },
        }));
    }
    if caller.sees_vhost("/") {
        for q in st.s.broker.default_vhost().queues() {
            let Some(id) = q
                .name()
                .strip_prefix("mqtt-subscription-")
                .and_then(|n| n.strip_suffix("qos1"))
            else {
                continue;
            };
            if seen.insert(id.to_string()) {
                out.push(json!({
                    "client_id": id,
                    "connected": false,
                    "queue": queue_json("/", &q),
                }));
            }
        }
    }
    Json(J::Array(out))
}

/// GET /api/mqtt/retained: retained messages by topic.
pub async fn mqtt_retained(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    if !caller.sees_vhost("/") {
        return Ok(Json(J::Array(Vec::new())));
    }
    let retained = st.s.mqtt.retained.lock();
    let mut topics: Vec<_> = retained.iter().collect();
    topics.sort_by(|a, b| a.0.cmp(b.0));
    Ok(Json(J::Array(
        topics
            .into_iter()
            .map(|(topic, m)| {
                let (payload, encoding) = super::resources::payload_text(&m.body);
                json!({
                    "topic": topic,
                    "payload": payload,
                    "payload_encoding": encoding,
                    "payload_bytes": m.body.len(),
                    "properties": super::json::properties_json(&m.properties),
                })
            })
            .collect(),
    )))
}

/// GET /api/xmpp/sessions: connected XMPP clients (bound JIDs).
pub async fn xmpp_sessions(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        visible_connections(&st, &caller)
            .iter()
            .filter(|c| c.protocol == Protocol::Xmpp)
            .map(|c| {
                json!({
                    "jid": c.client(),
                    "user": c.user(),
                    "connection": c.name(),
                    "peer_host": c.peer.ip().to_string(),
                    "ssl": c.tls(),
                    "transport": if c.transport.websocket { "websocket" } else { "tcp" },
                    "connected_at": c.connected_at,
                })
            })
            .collect(),
    ))
}

/// GET /api/xmpp/rooms: Multi-User Chat rooms (XEP-0045) with their
/// configuration, occupants and affiliations. Monitoring users and
/// administrators only (rooms belong to no vhost); empty when XMPP is off.
pub async fn xmpp_rooms(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    if !caller.sees_all() {
        return Err(ApiError::Forbidden("Not monitor user".into()));
    }
    let Some(x) = st.s.xmpp.as_ref() else {
        return Ok(Json(J::Array(Vec::new())));
    };
    let (rooms, _) = x.listing();
    Ok(Json(J::Array(
        rooms
            .into_iter()
            .map(|r| {
                json!({
                    "jid": r.jid,
                    "name": r.name,
                    "description": r.description,
                    "subject": r.subject,
                    "persistent": r.persistent,
                    "public": r.public,
                    "members_only": r.members_only,
                    "password_protected": r.password_protected,
                    "moderated": r.moderated,
                    "locked": r.locked,
                    "occupants": r.occupants.iter().map(|(nick, role)| json!({"nick": nick, "role": role})).collect::<Vec<_>>(),
                    "affiliations": r.affiliations.iter().map(|(jid, a)| json!({"jid": jid, "affiliation": a})).collect::<Vec<_>>(),
                    "history": r.history,
                })
            })
            .collect(),
    )))
}

/// GET /api/xmpp/pubsub: publish-subscribe nodes of the component and of
/// users' PEP services. Monitoring users and administrators only.
pub async fn xmpp_pubsub(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    if !caller.sees_all() {
        return Err(ApiError::Forbidden("Not monitor user".into()));
    }
    let Some(x) = st.s.xmpp.as_ref() else {
        return Ok(Json(J::Array(Vec::new())));
    };
    let (_, nodes) = x.listing();
    Ok(Json(J::Array(
        nodes
            .into_iter()
            .map(|n| {
                json!({
                    "service": n.service,
                    "node": n.node,
                    "title": n.title,
                    "access_model": n.access_model,
                    "max_items": n.max_items,
                    "persist_items": n.persist_items,
                    "items": n.items,
                    "subscriptions": n.subscriptions,
                    "owners": n.owners,
                })
            })
            .collect(),
    )))
}
