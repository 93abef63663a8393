//! Exchanges and their bindings: where a published message goes.

use crate::message::{Properties, Table, Value};
use crate::queue::Queue;
use crate::topic::TopicTrie;
use bytes::Bytes;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// The routing algorithm of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Every binding.
    Fanout,
    /// Binding keys are patterns with `*` and `#`.
    Topic,
    /// Binding arguments are matched against message headers.
    Headers,
}

impl ExchangeKind {
    /// Parses the AMQP type name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "direct" => Self::Direct,
            "fanout" => Self::Fanout,
            "topic" => Self::Topic,
            "headers" => Self::Headers,
            _ => return None,
        })
    }

    /// The AMQP type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<Queue>),
    /// Another exchange (exchange-to-exchange binding), by name.
    Exchange(Arc<str>),
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Destination::Queue(a), Destination::Queue(b)) => Arc::ptr_eq(a, b),
            (Destination::Exchange(a), Destination::Exchange(b)) => a == b,
            _ => false,
        }
    }
}

/// One binding as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Destination.
    pub destination: Destination,
    /// Binding key.
    pub key: String,
    /// Binding arguments (`x-match` and header values for headers exchanges).
    pub arguments: Table,
}

/// Declared attributes of an exchange, compared on redeclare.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeOptions {
    /// Routing algorithm.
    pub kind: ExchangeKind,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Cannot be published to directly.
    pub internal: bool,
    /// Arguments.
    pub arguments: Table,
    /// Declared as `x-delayed-message`: messages with an `x-delay` header wait
    /// that many milliseconds before `kind` routes them.
    pub delayed: bool,
}

impl ExchangeOptions {
    /// The type name as declared.
    pub fn type_name(&self) -> &'static str {
        if self.delayed {
            "x-delayed-message"
        } else {
            self.kind.as_str()
        }
    }
}

#[derive(Default)]
struct Bindings {
    all: Vec<Binding>,
    direct: HashMap<Bytes, Vec<Destination>>,
    topic: TopicTrie<Destination>,
}

/// An exchange.
pub struct Exchange {
    name: Arc<str>,
    options: ExchangeOptions,
    bindings: RwLock<Bindings>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("name", &self.name)
            .finish()
    }
}

impl Exchange {
    /// Creates an exchange with no bindings.
    pub fn new(name: Arc<str>, options: ExchangeOptions) -> Arc<Self> {
        Arc::new(Exchange {
            name,
            options,
            bindings: RwLock::new(Bindings::default()),
        })
    }

    /// The exchange's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Declared attributes.
    pub fn options(&self) -> &ExchangeOptions {
        &self.options
    }

    /// Adds a binding; false when the identical binding exists.
    pub fn bind(&self, binding: Binding) -> bool {
        let mut b = self.bindings.write();
        if b.all.contains(&binding) {
            return false;
        }
        match self.options.kind {
            ExchangeKind::Direct => b
                .direct
                .entry(Bytes::copy_from_slice(binding.key.as_bytes()))
                .or_default()
                .push(binding.destination.clone()),
            ExchangeKind::Topic => {
                b.topic.insert(&binding.key, binding.destination.clone());
            }
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        b.all.push(binding);
        true
    }

    /// Removes a binding; false when it did not exist.
    pub fn unbind(&self, binding: &Binding) -> bool {
        let mut b = self.bindings.write();
        let Some(pos) = b.all.iter().position(|x| x == binding) else {
            return false;
        };
        b.all.remove(pos);
        let still_bound_same_key = b
            .all
            .iter()
            .any(|x| x.key == binding.key && x.destination == binding.destination);
        if !still_bound_same_key {
            match self.options.kind {
                ExchangeKind::Direct => {
                    if let Some(v) = b.direct.get_mut(binding.key.as_bytes()) {
                        v.retain(|d| *d != binding.destination);
                        if v.is_empty() {
                            b.direct.remove(binding.key.as_bytes());
                        }
                    }
                }
                ExchangeKind::Topic => {
                    b.topic.remove(&binding.key, &binding.destination);
                }
                ExchangeKind::Fanout | ExchangeKind::Headers => {}
            }
        }
        true
    }

    /// Removes every binding to `destination`; returns how many went.
    pub fn unbind_destination(&self, destination: &Destination) -> usize {
        let doomed: Vec<Binding> = self
            .bindings
            .read()
            .all
            .iter()
            .filter(|b| b.destination == *destination)
            .cloned()
            .collect();
        doomed.iter().filter(|b| self.unbind(b)).count()
    }

    /// True when the exchange is the source of any binding.
    pub fn has_bindings(&self) -> bool {
        !self.bindings.read().all.is_empty()
    }

    /// A copy of the bindings, for listings.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings.read().all.clone()
    }

    /// Calls `out` for every destination the message routes to (maybe twice for
    /// the same destination; callers deduplicate).
    pub fn route(
        &self,
        routing_key: &[u8],
        properties: &Properties,
        mut out: impl FnMut(&Destination),
    ) {
        let b = self.bindings.read();
        match self.options.kind {
            ExchangeKind::Direct => {
                if let Some(dests) = b.direct.get(routing_key) {
                    dests.iter().for_each(out);
                }
            }
            ExchangeKind::Fanout => b.all.iter().for_each(|x| out(&x.destination)),
            ExchangeKind::Topic => {
                if let Ok(key) = std::str::from_utf8(routing_key) {
                    b.topic.matches(key, out);
                }
            }
            ExchangeKind::Headers => {
                let empty = Table::default();
                let headers = properties.headers.as_ref().unwrap_or(&empty);
                for x in &b.all {
                    if headers_match(&x.arguments, headers) {
                        out(&x.destination);
                    }
                }
            }
        }
    }
}

/// RabbitMQ's headers-exchange rule: `x-match` = all (default) / any, and the
/// `-with-x` variants that also compare `x-` prefixed keys. A binding value of
/// void only requires the header to be present.
pub fn headers_match(binding: &Table, headers: &Table) -> bool {
    let mode = binding
        .get("x-match")
        .and_then(Value::as_str)
        .unwrap_or("all");
    let (any, with_x) = match mode {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let mut considered = binding
        .iter()
        .filter(|(k, _)| k != "x-match" && (with_x || !k.starts_with("x-")))
        .map(|(k, v)| match headers.get(k) {
            Some(h) => matches!(v, Value::Void) || v.loosely_equals(h),
            None => false,
        });
    if any {
        considered.any(|m| m)
    } else {
        considered.all(|m| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, Value)]) -> Table {
        Table(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn s(v: &'static str) -> Value {
        Value::LongStr(Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn headers_all_and_any() {
        let h = table(&[("a", s("1")), ("b", Value::I32(2)), ("x-y", s("z"))]);
        assert!(headers_match(
            &table(&[("a", s("1")), ("b", Value::I64(2))]),
            &h
        ));
        assert!(!headers_match(&table(&[("a", s("1")), ("c", s("3"))]), &h));
        assert!(headers_match(
            &table(&[("x-match", s("any")), ("a", s("1")), ("c", s("3"))]),
            &h
        ));
        assert!(!headers_match(
            &table(&[("x-match", s("any")), ("x-y", s("z"))]),
            &h
        ));
        assert!(headers_match(
            &table(&[("x-match", s("any-with-x")), ("x-y", s("z"))]),
            &h
        ));
        assert!(headers_match(
            &table(&[
                ("x-match", s("all-with-x")),
                ("x-y", s("z")),
                ("a", Value::Void)
            ]),
            &h
        ));
        assert!(!headers_match(
            &table(&[("x-match", s("all-with-x")), ("x-y", s("q"))]),
            &h
        ));
    }
}
