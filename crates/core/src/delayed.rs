//! The `x-delayed-message` exchange's waiting room: messages published with an
//! `x-delay` header wait here, ordered by the time they fire, and are routed by
//! the exchange's `x-delayed-type` when that time comes. With a store, only
//! the index stays in memory: bodies wait on disk (persistent messages to
//! durable exchanges under a durable id, so they survive a restart and fire on
//! time after it; others under a scratch id dropped at the next start).

use crate::message::{Message, Value};
use crate::persist::Stored;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

/// Header holding the firing time (ms since the epoch) in the stored copy.
pub const FIRE_AT_HEADER: &str = "x-tributary-fire-at";

/// One held message.
#[derive(Debug)]
pub struct Held {
    /// The message, unless it waits on disk only.
    pub message: Option<Arc<Message>>,
    /// The store's copy.
    pub stored: Option<Stored>,
}

/// Held messages by firing time.
#[derive(Debug, Default)]
pub struct Waiting {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    items: HashMap<u64, Held>,
    next: u64,
}

impl Waiting {
    /// Holds a message until `fire_at`.
    pub fn hold(&mut self, fire_at: u64, held: Held) {
        let id = self.next;
        self.next += 1;
        self.heap.push(Reverse((fire_at, id)));
        self.items.insert(id, held);
    }

    /// Takes every message due at `now`, in firing order.
    pub fn due(&mut self, now: u64) -> Vec<Held> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(h) = self.items.remove(&id) {
                out.push(h);
            }
        }
        out
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The delay a message asks for: a positive `x-delay` header, in milliseconds.
pub fn requested_delay(message: &Message) -> Option<u64> {
    let v = message.properties.headers.as_ref()?.get("x-delay")?;
    let ms = match v {
        Value::ShortStr(_) | Value::LongStr(_) => v.as_str()?.trim().parse::<i64>().ok()?,
        other => other.as_i64()?,
    };
    (ms > 0).then_some(ms as u64)
}

/// The firing time recorded in a stored copy.
pub fn recorded_fire_at(message: &Message) -> Option<u64> {
    message
        .properties
        .headers
        .as_ref()?
        .get(FIRE_AT_HEADER)?
        .as_i64()
        .map(|v| v.max(0) as u64)
}

/// A copy of the message with (`Some`) or without (`None`) the firing-time header.
pub fn with_fire_at(message: &Message, fire_at: Option<u64>) -> Arc<Message> {
    let mut properties = message.properties.clone();
    match fire_at {
        Some(t) => properties
            .headers
            .get_or_insert_with(Default::default)
            .insert(FIRE_AT_HEADER, Value::I64(t as i64)),
        None => {
            if let Some(h) = properties.headers.as_mut() {
                h.0.retain(|(k, _)| k != FIRE_AT_HEADER);
            }
        }
    }
    message.with_properties(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_time_order() {
        let mut w = Waiting::default();
        for t in [30, 10, 20] {
            w.hold(
                t,
                Held {
                    message: None,
                    stored: Some(Stored {
                        queue: 1,
                        msg_id: t,
                        at: None,
                    }),
                },
            );
        }
        assert!(w.due(5).is_empty());
        let ids: Vec<u64> = w.due(25).iter().map(|h| h.stored.unwrap().msg_id).collect();
        assert_eq!(ids, vec![10, 20]);
        assert_eq!(w.len(), 1);
    }
}
