//! Core objects shaped as RabbitMQ's management JSON, and request bodies
//! read back. Request fields are read leniently as RabbitMQ does:
//! `rabbitmqadmin` sends booleans and numbers as strings ("true", "1").

use super::ApiError;
use bytes::Bytes;
use serde_json::{Map, Value as J, json};
use tributary_core::exchange::{Binding, Destination};
use tributary_core::{Exchange, Properties, Queue, Table, VHost, Value};

/// Parses a request body as a JSON object (an empty body is `{}`).
pub fn body_object(body: &[u8]) -> Result<Map<String, J>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<J>(body) {
        Ok(J::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest("a JSON object was expected".into())),
        Err(e) => Err(ApiError::BadRequest(format!("failed to decode JSON: {e}"))),
    }
}

/// A boolean field, given as a boolean or as "true"/"false".
pub fn get_bool(m: &Map<String, J>, key: &str, default: bool) -> Result<bool, ApiError> {
    match m.get(key) {
        None | Some(J::Null) => Ok(default),
        Some(J::Bool(b)) => Ok(*b),
        Some(J::String(s)) if s == "true" => Ok(true),
        Some(J::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key}: expected a boolean, got {other}"
        ))),
    }
}

/// A non-negative integer field, given as a number or a string of digits.
pub fn get_u64(m: &Map<String, J>, key: &str, default: u64) -> Result<u64, ApiError> {
    match m.get(key) {
        None | Some(J::Null) => Ok(default),
        Some(J::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or(default)),
        Some(J::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().unwrap_or(default)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key}: expected a non-negative integer, got {other}"
        ))),
    }
}

/// A string field.
pub fn get_str<'a>(m: &'a Map<String, J>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match m.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(J::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{key}: expected a string, got {other}"
        ))),
    }
}

/// The `arguments` object of a request as a core table.
pub fn get_arguments(m: &Map<String, J>) -> Result<Table, ApiError> {
    match m.get("arguments") {
        None | Some(J::Null) => Ok(Table::default()),
        Some(J::Object(o)) => Ok(object_to_table(o)),
        // rabbitmqadmin's default for an absent `arguments` is "{}" as text at times.
        Some(J::String(s)) if s.trim() == "{}" || s.is_empty() => Ok(Table::default()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "arguments: expected an object, got {other}"
        ))),
    }
}

/// A JSON object as a table of typed values.
pub fn object_to_table(o: &Map<String, J>) -> Table {
    Table(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
}

fn to_value(v: &J) -> Value {
    match v {
        J::Null => Value::Void,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::LongStr(Bytes::copy_from_slice(s.as_bytes())),
        J::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        J::Object(o) => Value::Table(object_to_table(o)),
    }
}

/// A core value as JSON (bytes as text, lossily).
pub fn value_json(v: &Value) -> J {
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::F32(f) => json!(f),
        Value::F64(f) => json!(f),
        Value::Decimal { scale, value } => json!(f64::from(*value) / 10f64.powi(i32::from(*scale))),
        Value::ShortStr(b) | Value::LongStr(b) | Value::ByteArray(b) => {
            J::String(String::from_utf8_lossy(b).into_owned())
        }
        Value::Array(a) => J::Array(a.iter().map(value_json).collect()),
        Value::Timestamp(t) => json!(t),
        Value::Table(t) => table_json(t),
        Value::Void => J::Null,
        other => match other.as_integer() {
            Some(i) => json!(i as i64),
            None => J::Null,
        },
    }
}

/// A table as a JSON object.
pub fn table_json(t: &Table) -> J {
    J::Object(t.iter().map(|(k, v)| (k.clone(), value_json(v))).collect())
}

fn text(b: &Option<Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Message properties as the API shows them (absent ones left out).
pub fn properties_json(p: &Properties) -> J {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<J>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    put("content_type", text(&p.content_type).map(J::String));
    put("content_encoding", text(&p.content_encoding).map(J::String));
    put("headers", p.headers.as_ref().map(table_json));
    put("delivery_mode", p.delivery_mode.map(|d| json!(d)));
    put("priority", p.priority.map(|d| json!(d)));
    put("correlation_id", text(&p.correlation_id).map(J::String));
    put("reply_to", text(&p.reply_to).map(J::String));
    put("expiration", text(&p.expiration).map(J::String));
    put("message_id", text(&p.message_id).map(J::String));
    put("timestamp", p.timestamp.map(|d| json!(d)));
    put("type", text(&p.kind).map(J::String));
    put("user_id", text(&p.user_id).map(J::String));
    put("app_id", text(&p.app_id).map(J::String));
    J::Object(m)
}

/// The `properties` object of a publish request.
pub fn properties_from(m: &Map<String, J>) -> Result<Properties, ApiError> {
    let props = match m.get("properties") {
        None | Some(J::Null) => return Ok(Properties::default()),
        Some(J::Object(o)) => o,
        Some(J::String(s)) if s.trim() == "{}" => return Ok(Properties::default()),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "properties: expected an object, got {other}"
            )));
        }
    };
    let bytes = |k: &str| -> Result<Option<Bytes>, ApiError> {
        Ok(get_str(props, k)?.map(|s| Bytes::copy_from_slice(s.as_bytes())))
    };
    let small = |k: &str| -> Result<Option<u8>, ApiError> {
        match props.get(k) {
            None | Some(J::Null) => Ok(None),
            _ => u8::try_from(get_u64(props, k, 0)?)
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("{k}: out of range"))),
        }
    };
    Ok(Properties {
        content_type: bytes("content_type")?,
        content_encoding: bytes("content_encoding")?,
        headers: match props.get("headers") {
            Some(J::Object(o)) => Some(object_to_table(o)),
            _ => None,
        },
        delivery_mode: small("delivery_mode")?,
        priority: small("priority")?,
        correlation_id: bytes("correlation_id")?,
        reply_to: bytes("reply_to")?,
        expiration: bytes("expiration")?,
        message_id: bytes("message_id")?,
        timestamp: match props.get("timestamp") {
            None | Some(J::Null) => None,
            _ => Some(get_u64(props, "timestamp", 0)?),
        },
        kind: bytes("type")?,
        user_id: bytes("user_id")?,
        app_id: bytes("app_id")?,
        cluster_id: None,
    })
}

/// One queue as `/api/queues` lists it.
pub fn queue_json(vhost: &str, q: &Queue) -> J {
    let st = q.stats();
    let c = q.counters();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let o = q.options();
    json!({
        "name": q.name(),
        "vhost": vhost,
        "durable": o.durable,
        "auto_delete": o.auto_delete,
        "exclusive": o.exclusive,
        "arguments": table_json(&o.arguments),
        "type": if q.is_stream() { "stream" } else { "classic" },
        "state": "running",
        "node": super::overview::node_name(),
        "messages": st.ready + st.unacked,
        "messages_ready": st.ready,
        "messages_unacknowledged": st.unacked,
        "message_bytes": st.ready_bytes,
        "message_bytes_ready": st.ready_bytes,
        "consumers": st.consumers,
        "message_stats": {
            "publish": load(&c.published),
            "deliver_get": load(&c.delivered),
            "redeliver": load(&c.redelivered),
            "ack": load(&c.acked),
            "drop_unroutable": 0,
        },
    })
}

/// One exchange as `/api/exchanges` lists it (the default one is "").
pub fn exchange_json(vhost: &str, x: &Exchange) -> J {
    let o = x.options();
    json!({
        "name": x.name(),
        "vhost": vhost,
        "type": o.type_name(),
        "durable": o.durable,
        "auto_delete": o.auto_delete,
        "internal": o.internal,
        "arguments": table_json(&o.arguments),
        "user_who_performed_action": "rmq-internal",
    })
}

/// RabbitMQ's `properties_key` naming one binding between two ends:
/// `~` for no key and no arguments, the key (URL-escaped), and `~` plus a
/// hash of the arguments when there are any.
pub fn properties_key(key: &str, arguments: &Table) -> String {
    let escaped =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    if arguments.is_empty() {
        if key.is_empty() { "~".into() } else { escaped }
    } else {
        let text = table_json(arguments).to_string();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("{escaped}~{:08x}", hash as u32)
    }
}

/// One binding as `/api/bindings` lists it.
pub fn binding_json(vhost: &str, source: &str, b: &Binding) -> J {
    let (dest, kind) = match &b.destination {
        Destination::Queue(q) => (q.name().to_string(), "queue"),
        Destination::Exchange(x) => (x.to_string(), "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": dest,
        "destination_type": kind,
        "routing_key": b.key,
        "arguments": table_json(&b.arguments),
        "properties_key": properties_key(&b.key, &b.arguments),
    })
}

/// Every binding of a vhost, the default exchange's implicit ones first.
pub fn bindings_json(v: &VHost) -> Vec<J> {
    let vhost = v.name();
    let mut queues = v.queues();
    queues.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out: Vec<J> = queues
        .iter()
        .map(|q| {
            json!({
                "source": "",
                "vhost": vhost,
                "destination": q.name(),
                "destination_type": "queue",
                "routing_key": q.name(),
                "arguments": {},
                "properties_key": properties_key(q.name(), &Table::default()),
            })
        })
        .collect();
    let mut exchanges = v.exchanges();
    exchanges.sort_by(|a, b| a.name().cmp(b.name()));
    for x in exchanges {
        for b in x.bindings() {
            out.push(binding_json(vhost, x.name(), &b));
        }
    }
    out
}
