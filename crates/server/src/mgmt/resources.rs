//! Exchanges, queues and bindings: list, show, declare, delete, purge, and
//! publish and get a message for debugging. Every change is checked
//! against the caller's vhost permissions as an AMQP client's would be.

use super::auth::Caller;
use super::json::{
    binding_json, bindings_json, body_object, exchange_json, get_arguments, get_bool, get_str,
    get_u64, properties_from, properties_json, properties_key, queue_json,
};
use super::{ApiError, ApiResult, St};
use crate::users::Access;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value as J, json};
use std::collections::HashMap;
use std::sync::Arc;
use tributary_core::exchange::Destination;
use tributary_core::{ExchangeOptions, Message, Queue, QueueOptions, Routed, VHost};

/// The name RabbitMQ's API uses for the default exchange in paths.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" { "" } else { name }
}

/// A vhost the caller may see, or 404.
pub fn vhost_for(st: &St, caller: &Caller, name: &str) -> ApiResult<Arc<VHost>> {
    match st.s.broker.vhost(name) {
        Some(v) if caller.sees_vhost(name) => Ok(v),
        _ => Err(ApiError::NotFound),
    }
}

fn visible_vhosts(st: &St, caller: &Caller) -> Vec<Arc<VHost>> {
    let mut v: Vec<_> =
        st.s.broker
            .vhosts()
            .into_iter()
            .filter(|v| caller.sees_vhost(v.name()))
            .collect();
    v.sort_by(|a, b| a.name().cmp(b.name()));
    v
}

fn find_queue(v: &VHost, name: &str) -> ApiResult<Arc<Queue>> {
    v.queues()
        .into_iter()
        .find(|q| q.name() == name)
        .ok_or(ApiError::NotFound)
}

fn exchanges_of(v: &VHost) -> Vec<J> {
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name().cmp(b.name()));
    xs.iter().map(|x| exchange_json(v.name(), x)).collect()
}

/// A queue's JSON with its message rates (`message_stats.*_details`).
fn queue_with_rates(st: &St, v: &VHost, q: &Queue) -> J {
    let mut j = queue_json(v.name(), q);
    if let Some(stats) = j.get_mut("message_stats") {
        super::rates::add_details(stats, st.rates.queue(v.name(), q.name()));
    }
    j
}

fn queues_of(st: &St, v: &VHost) -> Vec<J> {
    let mut qs = v.queues();
    qs.sort_by(|a, b| a.name().cmp(b.name()));
    qs.iter().map(|q| queue_with_rates(st, v, q)).collect()
}

/// GET /api/exchanges.
pub async fn exchanges(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        visible_vhosts(&st, &caller)
            .iter()
            .flat_map(|v| exchanges_of(v))
            .collect(),
    ))
}

/// GET /api/exchanges/{vhost}.
pub async fn exchanges_in(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    Ok(Json(J::Array(exchanges_of(&v))))
}

/// GET /api/exchanges/{vhost}/{name}.
pub async fn exchange(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    let x = v.exchange(exchange_name(&name))?;
    Ok(Json(exchange_json(v.name(), &x)))
}

/// PUT /api/exchanges/{vhost}/{name}: 201 when created, 204 when it existed.
pub async fn declare_exchange(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let m = body_object(&body)?;
    let v = vhost_for(&st, &caller, &vhost)?;
    caller.permit(&vhost, Access::Configure, &name)?;
    let kind = get_str(&m, "type")?
        .ok_or_else(|| ApiError::BadRequest("type: an exchange type is required".into()))?
        .to_string();
    let durable = get_bool(&m, "durable", true)?;
    let auto_delete = get_bool(&m, "auto_delete", false)?;
    let internal = get_bool(&m, "internal", false)?;
    let arguments = get_arguments(&m)?;
    let existed = v.exchange(&name).is_ok();
    v.declare_exchange(&name, &kind, false, |kind| ExchangeOptions {
        kind,
        durable,
        auto_delete,
        internal,
        arguments,
        delayed: false,
    })?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// DELETE /api/exchanges/{vhost}/{name}[?if-unused=true].
pub async fn delete_exchange(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let v = vhost_for(&st, &caller, &vhost)?;
    v.exchange(exchange_name(&name))?;
    caller.permit(&vhost, Access::Configure, &name)?;
    let if_unused = q.get("if-unused").is_some_and(|s| s == "true");
    v.delete_exchange(exchange_name(&name), if_unused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A body as the API shows it: text when it is UTF-8, else base64.
pub fn payload_text(body: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(body) {
        Ok(s) => (s.to_string(), "string"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(body),
            "base64",
        ),
    }
}

/// POST /api/exchanges/{vhost}/{name}/publish: `{"routed": bool}`.
pub async fn publish(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<J>> {
    let m = body_object(&body)?;
    let v = vhost_for(&st, &caller, &vhost)?;
    let exchange = exchange_name(&name).to_string();
    v.exchange(&exchange)?;
    caller.permit(&vhost, Access::Write, &exchange)?;
    let routing_key = get_str(&m, "routing_key")?
        .ok_or_else(|| ApiError::BadRequest("routing_key is required".into()))?
        .to_string();
    let payload = get_str(&m, "payload")?.unwrap_or("");
    let payload = match get_str(&m, "payload_encoding")?.unwrap_or("string") {
        "string" => Bytes::copy_from_slice(payload.as_bytes()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map(Bytes::from)
            .map_err(|e| ApiError::BadRequest(format!("payload: invalid base64: {e}")))?,
        other => {
            return Err(ApiError::BadRequest(format!(
                "payload_encoding: '{other}' is neither 'string' nor 'base64'"
            )));
        }
    };
    let properties = properties_from(&m)?;
    let message = Message::new(
        Bytes::copy_from_slice(exchange.as_bytes()),
        Bytes::copy_from_slice(routing_key.as_bytes()),
        properties,
        payload,
    );
    let mut routed = Routed::default();
    let n = v.publish(message, &mut routed)?;
    Ok(Json(json!({ "routed": n > 0 })))
}

/// GET /api/queues.
pub async fn queues(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        visible_vhosts(&st, &caller)
            .iter()
            .flat_map(|v| queues_of(&st, v))
            .collect(),
    ))
}

/// GET /api/queues/{vhost}.
pub async fn queues_in(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    Ok(Json(J::Array(queues_of(&st, &v))))
}

/// GET /api/queues/{vhost}/{name}.
pub async fn queue(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    let q = find_queue(&v, &name)?;
    let mut j = queue_with_rates(&st, &v, &q);
    // The details view: who consumes, and how it is bound.
    if let Some(m) = j.as_object_mut() {
        let consumers: Vec<J> = q
            .consumers()
            .into_iter()
            .map(|(tag, _owner, channel, options)| {
                json!({
                    "consumer_tag": &*tag,
                    "channel_details": { "number": channel },
                    "ack_required": !options.no_ack,
                    "exclusive": options.exclusive,
                    "arguments": { "x-priority": options.priority },
                })
            })
            .collect();
        m.insert("consumer_details".into(), J::Array(consumers));
    }
    Ok(Json(j))
}

/// PUT /api/queues/{vhost}/{name}: 201 when created, 204 when it existed.
pub async fn declare_queue(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let m = body_object(&body)?;
    let v = vhost_for(&st, &caller, &vhost)?;
    caller.permit(&vhost, Access::Configure, &name)?;
    let options = QueueOptions {
        durable: get_bool(&m, "durable", true)?,
        exclusive: false,
        auto_delete: get_bool(&m, "auto_delete", false)?,
        arguments: get_arguments(&m)?,
    };
    let existed = find_queue(&v, &name).is_ok();
    v.declare_queue(&name, false, options, 0)?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// DELETE /api/queues/{vhost}/{name}[?if-unused=true&if-empty=true].
pub async fn delete_queue(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let v = vhost_for(&st, &caller, &vhost)?;
    let queue = find_queue(&v, &name)?;
    caller.permit(&vhost, Access::Configure, &name)?;
    let flag = |k: &str| q.get(k).is_some_and(|s| s == "true");
    let owner = queue.owner().unwrap_or(0);
    v.delete_queue(&name, flag("if-unused"), flag("if-empty"), owner)?;
    Ok(StatusCode::NO_CONTENT)
}

/// DELETE /api/queues/{vhost}/{name}/contents: purges the queue.
pub async fn purge_queue(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let v = vhost_for(&st, &caller, &vhost)?;
    let queue = find_queue(&v, &name)?;
    caller.permit(&vhost, Access::Read, &name)?;
    queue.purge();
    Ok(StatusCode::NO_CONTENT)
}

/// POST /api/queues/{vhost}/{name}/get: takes up to `count` messages;
/// `ackmode` `ack_requeue_true` / `reject_requeue_true` put them back
/// (flagged redelivered, as in RabbitMQ), `ack_requeue_false` removes them,
/// `reject_requeue_false` rejects them (dead-lettering them if configured).
pub async fn get(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<J>> {
    let m = body_object(&body)?;
    let v = vhost_for(&st, &caller, &vhost)?;
    let queue = find_queue(&v, &name)?;
    caller.permit(&vhost, Access::Read, &name)?;
    let count = get_u64(&m, "count", 1)?;
    let ackmode = get_str(&m, "ackmode")?.unwrap_or("ack_requeue_true");
    if !matches!(
        ackmode,
        "ack_requeue_true" | "ack_requeue_false" | "reject_requeue_true" | "reject_requeue_false"
    ) {
        return Err(ApiError::BadRequest(format!(
            "ackmode: unknown mode '{ackmode}'"
        )));
    }
    let encoding = get_str(&m, "encoding")?.unwrap_or("auto");
    let truncate = get_u64(&m, "truncate", u64::MAX)? as usize;
    let mut out = Vec::new();
    let mut taken = Vec::new();
    for _ in 0..count {
        let Some((entry, left)) = queue.get(false) else {
            break;
        };
        let body = &entry.message.body;
        let shown = &body[..body.len().min(truncate)];
        let (payload, payload_encoding) = if encoding == "base64" {
            (
                base64::engine::general_purpose::STANDARD.encode(shown),
                "base64",
            )
        } else {
            payload_text(shown)
        };
        out.push(json!({
            "payload_bytes": body.len(),
            "redelivered": entry.redelivered,
            "exchange": String::from_utf8_lossy(&entry.message.exchange),
            "routing_key": String::from_utf8_lossy(&entry.message.routing_key),
            "message_count": left,
            "properties": properties_json(&entry.message.properties),
            "payload": payload,
            "payload_encoding": payload_encoding,
        }));
        taken.push(entry);
    }
    match ackmode {
        "ack_requeue_false" => taken.iter().for_each(|e| queue.settle(e)),
        "reject_requeue_false" => taken.into_iter().for_each(|e| queue.reject(e)),
        _ => queue.requeue(taken),
    }
    Ok(Json(J::Array(out)))
}

/// GET /api/queues/{vhost}/{name}/bindings.
pub async fn queue_bindings(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    find_queue(&v, &name)?;
    Ok(Json(J::Array(
        bindings_json(&v)
            .into_iter()
            .filter(|b| b["destination_type"] == "queue" && b["destination"] == name.as_str())
            .collect(),
    )))
}

/// GET /api/bindings.
pub async fn bindings(State(st): State<St>, caller: Caller) -> Json<J> {
    Json(J::Array(
        visible_vhosts(&st, &caller)
            .iter()
            .flat_map(|v| bindings_json(v))
            .collect(),
    ))
}

/// GET /api/bindings/{vhost}.
pub async fn bindings_in(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    Ok(Json(J::Array(bindings_json(&v))))
}

/// The bindings from `source` to `destination` (`kind` is `q` or `e`).
fn between(v: &VHost, source: &str, kind: &str, destination: &str) -> ApiResult<Vec<J>> {
    let x = v.exchange(exchange_name(source))?;
    let to_queue = match kind {
        "q" => {
            find_queue(v, destination)?;
            true
        }
        "e" => {
            v.exchange(destination)?;
            false
        }
        _ => return Err(ApiError::NotFound),
    };
    Ok(x.bindings()
        .iter()
        .filter(|b| match &b.destination {
            Destination::Queue(q) => to_queue && q.name() == destination,
            Destination::Exchange(e) => !to_queue && &**e == destination,
        })
        .map(|b| binding_json(v.name(), x.name(), b))
        .collect())
}

/// GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}.
pub async fn binding_list(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    Ok(Json(J::Array(between(&v, &source, &kind, &destination)?)))
}

/// POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}: 201 with
/// the new binding's location.
pub async fn bind(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let m = body_object(&body)?;
    let v = vhost_for(&st, &caller, &vhost)?;
    between(&v, &source, &kind, &destination)?;
    caller.permit(&vhost, Access::Write, &destination)?;
    caller.permit(&vhost, Access::Read, &source)?;
    let key = get_str(&m, "routing_key")?.unwrap_or("").to_string();
    let arguments = get_arguments(&m)?;
    let props = properties_key(&key, &arguments);
    if kind == "q" {
        let owner = find_queue(&v, &destination)?.owner().unwrap_or(0);
        v.bind_queue(&destination, &source, &key, arguments, owner)?;
    } else {
        v.bind_exchange(&destination, &source, &key, arguments)?;
    }
    let location = format!(
        "/api/bindings/{}/e/{}/{kind}/{}/{props}",
        enc(&vhost),
        enc(&source),
        enc(&destination)
    );
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
    )
        .into_response())
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

type BindingPath = (String, String, String, String, String);

/// GET /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}.
pub async fn binding_one(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<BindingPath>,
) -> ApiResult<Json<J>> {
    let v = vhost_for(&st, &caller, &vhost)?;
    between(&v, &source, &kind, &destination)?
        .into_iter()
        .find(|b| b["properties_key"] == props.as_str())
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// DELETE /api/bindings/{vhost}/e/{source}/{q|e}/{destination}/{props}.
pub async fn unbind(
    State(st): State<St>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<BindingPath>,
) -> ApiResult<StatusCode> {
    let v = vhost_for(&st, &caller, &vhost)?;
    let x = v.exchange(exchange_name(&source))?;
    between(&v, &source, &kind, &destination)?;
    caller.permit(&vhost, Access::Write, &destination)?;
    caller.permit(&vhost, Access::Read, &source)?;
    let binding = x
        .bindings()
        .into_iter()
        .find(|b| {
            let same_end = match &b.destination {
                Destination::Queue(q) => kind == "q" && q.name() == destination,
                Destination::Exchange(e) => kind == "e" && **e == *destination,
            };
            same_end && properties_key(&b.key, &b.arguments) == props
        })
        .ok_or(ApiError::NotFound)?;
    if kind == "q" {
        let owner = find_queue(&v, &destination)?.owner().unwrap_or(0);
        v.unbind_queue(
            &destination,
            &source,
            &binding.key,
            binding.arguments,
            owner,
        )?;
    } else {
        v.unbind_exchange(&destination, &source, &binding.key, binding.arguments)?;
    }
    Ok(StatusCode::NO_CONTENT)
}
