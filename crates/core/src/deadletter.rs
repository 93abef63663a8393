//! Dead-lettering: the message a queue gives up on, rewritten the way RabbitMQ
//! does it (`x-death` history, `x-first-death-*` headers, expiration removed)
//! before it is republished to the dead-letter exchange.

use crate::message::{Message, Table, Value};
use bytes::Bytes;
use std::sync::Arc;

/// Why a message was dead-lettered (the `reason` in `x-death`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// basic.reject or basic.nack with requeue=false.
    Rejected,
    /// Its TTL passed.
    Expired,
    /// The queue was over its length limit.
    MaxLen,
    /// Requeued more than `x-delivery-limit` times.
    DeliveryLimit,
}

impl Reason {
    /// The reason as RabbitMQ writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::MaxLen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

fn text(s: &str) -> Value {
    Value::LongStr(Bytes::copy_from_slice(s.as_bytes()))
}

/// The dead-lettered copy of `message`, as it leaves `queue` for `reason`:
/// its `x-death` entry for (queue, reason) is counted up and moved first (or a
/// new one is added first), `x-first-death-*` are set once, and `expiration`
/// moves into the entry as `original-expiration`.
pub fn dead_lettered(
    message: &Message,
    queue: &str,
    reason: Reason,
    now_secs: u64,
) -> Arc<Message> {
    let mut properties = message.properties.clone();
    let mut headers = properties.headers.take().unwrap_or_default();
    let mut deaths = match headers.get("x-death") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let same = |v: &Value| match v {
        Value::Table(t) => {
            t.get("queue").and_then(Value::as_str) == Some(queue)
                && t.get("reason").and_then(Value::as_str) == Some(reason.as_str())
        }
        _ => false,
    };
    let routing_keys = Value::Array(
        std::iter::once(message.routing_key.clone())
            .chain(message.properties.cc_keys("CC"))
            .map(Value::LongStr)
            .collect(),
    );
    let exchange = Value::LongStr(message.exchange.clone());
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let mut t = match deaths.remove(i) {
                Value::Table(t) => t,
                _ => Table::default(),
            };
            let count = t
                .get("count")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .saturating_add(1);
            t.insert("count", Value::I64(count));
            t.insert("time", Value::Timestamp(now_secs));
            Value::Table(t)
        }
        None => {
            let mut t = Table::default();
            t.insert("count", Value::I64(1));
            t.insert("reason", text(reason.as_str()));
            t.insert("queue", text(queue));
            t.insert("time", Value::Timestamp(now_secs));
            t.insert("exchange", exchange.clone());
            t.insert("routing-keys", routing_keys);
            if let Some(exp) = &properties.expiration {
                t.insert("original-expiration", Value::LongStr(exp.clone()));
            }
            Value::Table(t)
        }
    };
    deaths.insert(0, entry);
    headers.insert("x-death", Value::Array(deaths));
    if headers.get("x-first-death-reason").is_none() {
        headers.insert("x-first-death-reason", text(reason.as_str()));
        headers.insert("x-first-death-queue", text(queue));
        headers.insert("x-first-death-exchange", exchange);
    }
    properties.headers = Some(headers);
    properties.expiration = None;
    message.with_properties(properties)
}

/// RabbitMQ's cycle rule: dead-lettering into `target` is a cycle to drop
/// when `target` already appears in the message's `x-death` history and no
/// death since (newest first, up to and including that one) was a rejection.
pub fn is_cycle(message: &Message, target: &str) -> bool {
    let Some(Value::Array(deaths)) = message
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-death"))
    else {
        return false;
    };
    for d in deaths {
        let Value::Table(t) = d else { continue };
        if t.get("reason").and_then(Value::as_str) == Some("rejected") {
            return false;
        }
        if t.get("queue").and_then(Value::as_str) == Some(target) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;

    fn msg() -> Message {
        Message {
            exchange: Bytes::from_static(b"ex"),
            routing_key: Bytes::from_static(b"rk"),
            properties: Properties {
                expiration: Some(Bytes::from_static(b"100")),
                ..Default::default()
            },
            body: Bytes::from_static(b"b"),
        }
    }

    fn deaths(m: &Message) -> Vec<Value> {
        match m.properties.headers.as_ref().unwrap().get("x-death") {
            Some(Value::Array(a)) => a.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_death_then_counted() {
        let once = dead_lettered(&msg(), "q1", Reason::Expired, 10);
        assert!(once.properties.expiration.is_none());
        let h = once.properties.headers.as_ref().unwrap();
        assert_eq!(
            h.get("x-first-death-reason").and_then(Value::as_str),
            Some("expired")
        );
        assert_eq!(
            h.get("x-first-death-queue").and_then(Value::as_str),
            Some("q1")
        );
        let twice = dead_lettered(
            &dead_lettered(&once, "q2", Reason::Expired, 11),
            "q1",
            Reason::Expired,
            12,
        );
        let d = deaths(&twice);
        assert_eq!(d.len(), 2);
        let Value::Table(first) = &d[0] else { panic!() };
        assert_eq!(first.get("queue").and_then(Value::as_str), Some("q1"));
        assert_eq!(first.get("count").and_then(Value::as_i64), Some(2));
        assert!(is_cycle(&twice, "q2"));
        assert!(!is_cycle(&twice, "q3"));
        let rejected = dead_lettered(&twice, "q3", Reason::Rejected, 13);
        assert!(!is_cycle(&rejected, "q1"));
    }

    #[test]
    fn a_forged_huge_count_saturates() {
        let mut m = msg();
        let mut entry = Table::default();
        entry.insert("queue", text("q"));
        entry.insert("reason", text("rejected"));
        entry.insert("count", Value::I64(i64::MAX));
        let mut h = Table::default();
        h.insert("x-death", Value::Array(vec![Value::Table(entry)]));
        m.properties.headers = Some(h);
        let out = dead_lettered(&m, "q", Reason::Rejected, 1);
        let Value::Table(t) = &deaths(&out)[0] else {
            panic!()
        };
        assert_eq!(t.get("count").and_then(Value::as_i64), Some(i64::MAX));
    }
}
