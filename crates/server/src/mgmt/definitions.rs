//! Definitions export and import (`GET`/`POST /api/definitions`): users
//! (with their password hashes and tags), vhosts, permissions, exchanges,
//! queues and bindings in one JSON document in RabbitMQ's format, so that
//! a file exported by RabbitMQ 3.x/4.x imports as is and ours can be
//! imported back here (or into RabbitMQ, for users with RabbitMQ hashes).
//!
//! RabbitMQ's `rabbit_password_hashing_sha256` (and sha512) hashes are kept
//! as they are and verified RabbitMQ's way (see `users::verify_password`);
//! our own users' Argon2id hashes export with the algorithm
//! `tributary_password_hashing_argon2id`, which only Tributary reads.
//! Vhost limits travel as RabbitMQ's `vhost-limits` runtime parameters;
//! other runtime parameters and policies are not supported: an import
//! skips them (and says so in the log).

use super::access::{create_vhost, exported_hash, parse_tags, stored_hash};
use super::auth::Caller;
use super::json::{body_object, get_arguments, get_bool, get_str, table_json};
use super::{ApiError, ApiResult, St};
use crate::users::Permission;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value as J, json};
use tributary_core::exchange::Destination;
use tributary_core::{ExchangeOptions, QueueOptions, VHost};

/// GET /api/definitions.
pub async fn export(State(st): State<St>, caller: Caller) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    let mut users = st.s.admin.list()?;
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let mut permissions = Vec::new();
    let users_json: Vec<J> = users
        .iter()
        .map(|u| {
            for (vhost, p) in &u.permissions {
                permissions.push(json!({
                    "user": u.name, "vhost": vhost,
                    "configure": p.configure, "write": p.write, "read": p.read,
                }));
            }
            let (hash, algorithm) = exported_hash(&u.password_hash);
            json!({
                "name": u.name,
                "password_hash": hash,
                "hashing_algorithm": algorithm,
                "tags": u.tags,
                "limits": {},
            })
        })
        .collect();
    let records = st.s.users.vhosts();
    let mut vhosts = st.s.broker.vhosts();
    vhosts.sort_by(|a, b| a.name().cmp(b.name()));
    let (mut exchanges, mut queues, mut bindings, mut vhosts_json) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &vhosts {
        let record = records.iter().find(|r| r.name == v.name());
        vhosts_json.push(json!({
            "name": v.name(),
            "limits": [],
            "metadata": {
                "description": record.map_or("", |r| r.description.as_str()),
                "tags": record.map(|r| r.tags.clone()).unwrap_or_default(),
            },
        }));
        let (x, q, b) = objects_of(v, true);
        exchanges.extend(x);
        queues.extend(q);
        bindings.extend(b);
    }
    Ok(Json(json!({
        "rabbit_version": "3.13.0",
        "rabbitmq_version": "3.13.0",
        "product_name": "Tributary",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users_json,
        "vhosts": vhosts_json,
        "permissions": permissions,
        "topic_permissions": [],
        "parameters": limit_parameters(&st, None, true),
        "global_parameters": [],
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// A vhost's exchanges (not the default and `amq.*` ones), queues (not
/// exclusive ones) and bindings, each with a `vhost` field when `with_vhost`.
fn objects_of(v: &VHost, with_vhost: bool) -> (Vec<J>, Vec<J>, Vec<J>) {
    let (mut exchanges, mut queues, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let tag = |mut j: J| {
        if with_vhost && let Some(m) = j.as_object_mut() {
            m.insert("vhost".into(), J::String(v.name().to_string()));
        }
        j
    };
    let mut qs = v.queues();
    qs.sort_by(|a, b| a.name().cmp(b.name()));
    for q in qs.iter().filter(|q| !q.options().exclusive) {
        let o = q.options();
        queues.push(tag(json!({
            "name": q.name(),
            "durable": o.durable, "auto_delete": o.auto_delete,
            "arguments": table_json(&o.arguments),
        })));
    }
    let mut xs = v.exchanges();
    xs.sort_by(|a, b| a.name().cmp(b.name()));
    for x in &xs {
        if x.name().is_empty() || x.name().starts_with("amq.") {
            continue;
        }
        let o = x.options();
        exchanges.push(tag(json!({
            "name": x.name(), "type": o.type_name(),
            "durable": o.durable, "auto_delete": o.auto_delete,
            "internal": o.internal, "arguments": table_json(&o.arguments),
        })));
    }
    for x in &xs {
        for b in x.bindings() {
            let (destination, kind) = match &b.destination {
                Destination::Queue(q) if q.options().exclusive => continue,
                Destination::Queue(q) => (q.name().to_string(), "queue"),
                Destination::Exchange(e) => (e.to_string(), "exchange"),
            };
            bindings.push(tag(json!({
                "source": x.name(),
                "destination": destination, "destination_type": kind,
                "routing_key": b.key, "arguments": table_json(&b.arguments),
            })));
        }
    }
    (exchanges, queues, bindings)
}

/// Vhost limits as RabbitMQ exports them: runtime parameters of the
/// `vhost-limits` component, named `limits`.
fn limit_parameters(st: &St, only: Option<&str>, with_vhost: bool) -> Vec<J> {
    let mut records = st.s.users.vhosts();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
        .iter()
        .filter(|r| !r.limits.is_empty() && only.is_none_or(|o| o == r.name))
        .map(|r| {
            let mut p = json!({
                "component": "vhost-limits",
                "name": "limits",
                "value": super::limits::value_json(&r.limits),
            });
            if with_vhost && let Some(m) = p.as_object_mut() {
                m.insert("vhost".into(), J::String(r.name.clone()));
            }
            p
        })
        .collect()
}

/// GET /api/definitions/{vhost}: one vhost's exchanges, queues and
/// bindings, without `vhost` fields (RabbitMQ's per-vhost export).
pub async fn export_vhost(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Json<J>> {
    caller.require_admin()?;
    let v = st.s.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let (exchanges, queues, bindings) = objects_of(&v, false);
    Ok(Json(json!({
        "rabbit_version": "3.13.0",
        "rabbitmq_version": "3.13.0",
        "product_name": "Tributary",
        "product_version": env!("CARGO_PKG_VERSION"),
        "parameters": limit_parameters(&st, Some(&vhost), false),
        "policies": [],
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    })))
}

/// POST /api/definitions/{vhost}: imports exchanges, queues and bindings
/// into that vhost (their own `vhost` fields are ignored); users, vhosts
/// and permissions in the document are not imported. 204.
pub async fn import_vhost(
    State(st): State<St>,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    st.s.broker.vhost(&vhost).ok_or(ApiError::NotFound)?;
    let mut doc = body_object(&body)?;
    for section in ["users", "vhosts", "permissions"] {
        doc.remove(section);
    }
    for section in ["exchanges", "queues", "bindings", "parameters"] {
        if let Some(J::Array(items)) = doc.get_mut(section) {
            for item in items.iter_mut() {
                if let Some(m) = item.as_object_mut() {
                    m.insert("vhost".into(), J::String(vhost.clone()));
                }
            }
        }
    }
    apply(&st, &doc)?;
    Ok(StatusCode::NO_CONTENT)
}

fn list<'a>(m: &'a Map<String, J>, key: &str) -> ApiResult<Vec<&'a Map<String, J>>> {
    match m.get(key) {
        None | Some(J::Null) => Ok(Vec::new()),
        Some(J::Array(a)) => a
            .iter()
            .map(|e| {
                e.as_object()
                    .ok_or_else(|| ApiError::BadRequest(format!("{key}: expected objects")))
            })
            .collect(),
        Some(_) => Err(ApiError::BadRequest(format!("{key}: expected an array"))),
    }
}

fn required<'a>(m: &'a Map<String, J>, what: &str, key: &str) -> ApiResult<&'a str> {
    get_str(m, key)?.ok_or_else(|| ApiError::BadRequest(format!("{what}: '{key}' is required")))
}

/// POST /api/definitions: imports a definitions document (204). Objects
/// that exist are left as they are (users are updated).
pub async fn import(State(st): State<St>, caller: Caller, body: Bytes) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let doc = body_object(&body)?;
    apply(&st, &doc)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Imports a parsed definitions document.
fn apply(st: &St, doc: &Map<String, J>) -> ApiResult<()> {
    // Validate the shape of every section before changing anything.
    let sections = [
        "parameters",
        "users",
        "vhosts",
        "permissions",
        "exchanges",
        "queues",
        "bindings",
    ];
    for s in sections {
        list(doc, s)?;
    }
    for skipped in ["global_parameters", "policies", "topic_permissions"] {
        if list(doc, skipped).is_ok_and(|l| !l.is_empty()) {
            tracing::warn!(
                section = skipped,
                "definitions import: section not supported, skipped"
            );
        }
    }
    for v in list(doc, "vhosts")? {
        let name = required(v, "vhosts", "name")?;
        let description = v
            .get("metadata")
            .and_then(|m| m.get("description"))
            .and_then(J::as_str)
            .or(get_str(v, "description")?)
            .unwrap_or("");
        create_vhost(st, name, description)?;
    }
    for p in list(doc, "parameters")? {
        if get_str(p, "component")? != Some("vhost-limits") {
            tracing::warn!(
                component = get_str(p, "component")?.unwrap_or(""),
                "definitions import: runtime parameter not supported, skipped"
            );
            continue;
        }
        let vhost = required(p, "parameters", "vhost")?;
        let value = match p.get("value") {
            Some(v @ J::Object(_)) => v.to_string(),
            _ => {
                return Err(ApiError::BadRequest(
                    "parameters: a vhost-limits value must be an object".into(),
                ));
            }
        };
        // The document's limits replace the vhost's, as in RabbitMQ.
        st.s.admin.clear_vhost_limits(vhost)?;
        st.s.admin.set_vhost_limits(vhost, &value)?;
    }
    for u in list(doc, "users")? {
        let name = required(u, "users", "name")?;
        let hash = required(u, "users", "password_hash")?;
        let algorithm = get_str(u, "hashing_algorithm")?;
        let tags = parse_tags(u)?;
        let stored = stored_hash(hash, algorithm).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "user '{name}': hashing_algorithm '{}' is not supported",
                algorithm.unwrap_or("")
            ))
        })?;
        st.s.admin.put_hashed(name, &stored, tags)?;
    }
    for p in list(doc, "permissions")? {
        let permission = Permission {
            configure: required(p, "permissions", "configure")?.into(),
            write: required(p, "permissions", "write")?.into(),
            read: required(p, "permissions", "read")?.into(),
        };
        st.s.admin.set_permissions(
            required(p, "permissions", "user")?,
            required(p, "permissions", "vhost")?,
            permission,
        )?;
    }
    let vhost = |m: &Map<String, J>, what: &str| -> ApiResult<_> {
        let name = required(m, what, "vhost")?;
        st.s.broker
            .vhost(name)
            .ok_or_else(|| ApiError::BadRequest(format!("{what}: vhost '{name}' does not exist")))
    };
    for x in list(doc, "exchanges")? {
        let v = vhost(x, "exchanges")?;
        let name = required(x, "exchanges", "name")?;
        let kind = required(x, "exchanges", "type")?;
        let (durable, auto_delete, internal) = (
            get_bool(x, "durable", true)?,
            get_bool(x, "auto_delete", false)?,
            get_bool(x, "internal", false)?,
        );
        let arguments = get_arguments(x)?;
        if name.is_empty() || name.starts_with("amq.") {
            continue;
        }
        v.declare_exchange(name, kind, false, |kind| ExchangeOptions {
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            delayed: false,
        })?;
    }
    for q in list(doc, "queues")? {
        let v = vhost(q, "queues")?;
        let options = QueueOptions {
            durable: get_bool(q, "durable", true)?,
            exclusive: false,
            auto_delete: get_bool(q, "auto_delete", false)?,
            arguments: get_arguments(q)?,
        };
        v.declare_queue(required(q, "queues", "name")?, false, options, 0)?;
    }
    for b in list(doc, "bindings")? {
        let v = vhost(b, "bindings")?;
        let source = required(b, "bindings", "source")?;
        let destination = required(b, "bindings", "destination")?;
        let key = get_str(b, "routing_key")?.unwrap_or("");
        let arguments = get_arguments(b)?;
        match get_str(b, "destination_type")?.unwrap_or("queue") {
            "queue" => v.bind_queue(destination, source, key, arguments, 0)?,
            "exchange" => v.bind_exchange(destination, source, key, arguments)?,
            other => {
                return Err(ApiError::BadRequest(format!(
                    "bindings: unknown destination_type '{other}'"
                )));
            }
        }
    }
    Ok(())
}
