//! Queue arguments (`x-message-ttl`, `x-max-length`, ...) parsed and checked
//! once at declaration, with RabbitMQ's names, defaults and refusals.

use crate::error::{CoreError, CoreResult};
use crate::message::{Table, Value};

/// What a full queue does with a new message (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest messages to make room.
    #[default]
    DropHead,
    /// Refuse the new message (basic.nack under confirms).
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
}

/// The queue behaviour its arguments ask for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    /// `x-message-ttl`, milliseconds.
    pub message_ttl: Option<u64>,
    /// `x-expires`, milliseconds unused before the queue is deleted.
    pub expires: Option<u64>,
    /// `x-dead-letter-exchange`.
    pub dead_letter_exchange: Option<String>,
    /// `x-dead-letter-routing-key`.
    pub dead_letter_routing_key: Option<String>,
    /// `x-max-length`, ready messages.
    pub max_length: Option<u64>,
    /// `x-max-length-bytes`, bytes of ready bodies.
    pub max_length_bytes: Option<u64>,
    /// `x-overflow`.
    pub overflow: Overflow,
    /// `x-max-priority` (1–255).
    pub max_priority: Option<u8>,
    /// `x-single-active-consumer`.
    pub single_active_consumer: bool,
    /// `x-delivery-limit`: redeliveries allowed before the message is dead-lettered or dropped.
    pub delivery_limit: Option<u64>,
    /// `x-queue-type: stream`: the stream's retention and segment size.
    pub stream: Option<crate::stream::StreamSettings>,
}

fn invalid(queue: &str, vhost: &str, key: &str, why: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
    ))
}

impl QueueArgs {
    /// Parses and validates a queue's arguments (406 PRECONDITION_FAILED for a bad one).
    pub fn parse(arguments: &Table, queue: &str, vhost: &str) -> CoreResult<Self> {
        let mut a = QueueArgs::default();
        let non_negative = |key: &str| -> CoreResult<Option<u64>> {
            match arguments.get(key) {
                None => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 0 => Ok(Some(n as u64)),
                    Some(n) => Err(invalid(
                        queue,
                        vhost,
                        key,
                        &format!("{{value_negative,{n}}}"),
                    )),
                    None => Err(invalid(
                        queue,
                        vhost,
                        key,
                        "{unacceptable_type,not_an_integer}",
                    )),
                },
            }
        };
        let text = |key: &str| -> CoreResult<Option<String>> {
            match arguments.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| invalid(queue, vhost, key, "{unacceptable_type,not_a_string}")),
            }
        };
        a.message_ttl = non_negative("x-message-ttl")?;
        a.expires = non_negative("x-expires")?;
        if a.expires == Some(0) {
            return Err(invalid(queue, vhost, "x-expires", "{value_zero,0}"));
        }
        a.dead_letter_exchange = text("x-dead-letter-exchange")?;
        a.dead_letter_routing_key = text("x-dead-letter-routing-key")?;
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return Err(invalid(
                queue,
                vhost,
                "x-dead-letter-routing-key",
                "routing_key_without_dlx",
            ));
        }
        a.max_length = non_negative("x-max-length")?;
        a.max_length_bytes = non_negative("x-max-length-bytes")?;
        a.overflow = match text("x-overflow")?.as_deref() {
            None | Some("drop-head") => Overflow::DropHead,
            Some("reject-publish") => Overflow::RejectPublish,
            Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
            Some(other) => {
                return Err(invalid(
                    queue,
                    vhost,
                    "x-overflow",
                    &format!("{{unacceptable_value,{other}}}"),
                ));
            }
        };
        a.max_priority = match non_negative("x-max-priority")? {
            None => None,
            Some(0) => None,
            Some(n) if n <= 255 => Some(n as u8),
            Some(n) => {
                return Err(invalid(
                    queue,
                    vhost,
                    "x-max-priority",
                    &format!("{{value_too_large,{n},255}}"),
                ));
            }
        };
        a.single_active_consumer = match arguments.get("x-single-active-consumer") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(invalid(
                    queue,
                    vhost,
                    "x-single-active-consumer",
                    "{unacceptable_type,not_a_boolean}",
                ));
            }
        };
        a.delivery_limit = non_negative("x-delivery-limit")?;
        if crate::stream::is_stream(arguments) {
            a.stream = Some(crate::stream::StreamSettings::parse(
                arguments, queue, vhost,
            )?);
            // A stream keeps everything until retention removes whole segments.
            a.max_length_bytes = None;
        }
        Ok(a)
    }
}

/// Milliseconds since the Unix epoch: expiry times survive restarts as RabbitMQ's do.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn t(pairs: Vec<(&str, Value)>) -> Table {
        Table(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn parses_rabbitmq_arguments() {
        let a = QueueArgs::parse(
            &t(vec![
                ("x-message-ttl", Value::I32(500)),
                ("x-max-length", Value::I64(3)),
                (
                    "x-overflow",
                    Value::LongStr(Bytes::from_static(b"reject-publish")),
                ),
                (
                    "x-dead-letter-exchange",
                    Value::LongStr(Bytes::from_static(b"dlx")),
                ),
                ("x-max-priority", Value::U8(10)),
                ("x-single-active-consumer", Value::Bool(true)),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(a.message_ttl, Some(500));
        assert_eq!(a.max_length, Some(3));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        assert_eq!(a.max_priority, Some(10));
        assert!(a.single_active_consumer);
    }

    #[test]
    fn refuses_bad_values() {
        for bad in [
            t(vec![("x-message-ttl", Value::I32(-1))]),
            t(vec![(
                "x-overflow",
                Value::LongStr(Bytes::from_static(b"nope")),
            )]),
            t(vec![("x-max-priority", Value::I32(256))]),
            t(vec![(
                "x-dead-letter-routing-key",
                Value::LongStr(Bytes::from_static(b"k")),
            )]),
            t(vec![("x-expires", Value::I32(0))]),
        ] {
            assert!(
                matches!(
                    QueueArgs::parse(&bad, "q", "/"),
                    Err(CoreError::PreconditionFailed(_))
                ),
                "{bad:?}"
            );
        }
    }
}
