//! The protocol-neutral message model: a shared body plus properties.
//!
//! Every protocol maps its own metadata onto [`Properties`]; the body is a
//! [`Bytes`] that fan-out shares instead of copying.

use bytes::Bytes;
use std::sync::Arc;

/// A typed header value, wide enough to carry AMQP field tables and MQTT user properties.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 32-bit integer.
    I32(i32),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 64-bit integer.
    I64(i64),
    /// Single-precision float.
    F32(f32),
    /// Double-precision float.
    F64(f64),
    /// AMQP decimal: `value / 10^scale`.
    Decimal {
        /// Number of decimal digits.
        scale: u8,
        /// Unscaled value.
        value: u32,
    },
    /// A short string (at most 255 bytes on the AMQP wire).
    ShortStr(Bytes),
    /// A long string (any bytes).
    LongStr(Bytes),
    /// An ordered list of values.
    Array(Vec<Value>),
    /// Seconds since the Unix epoch.
    Timestamp(u64),
    /// A nested table.
    Table(Table),
    /// No value.
    Void,
    /// Raw bytes.
    ByteArray(Bytes),
}

impl Value {
    /// The value as a wide integer when it is one, for cross-width comparisons.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Value::I8(v) => v as i128,
            Value::U8(v) => v as i128,
            Value::I16(v) => v as i128,
            Value::U16(v) => v as i128,
            Value::I32(v) => v as i128,
            Value::U32(v) => v as i128,
            Value::I64(v) => v as i128,
            Value::Timestamp(v) => v as i128,
            _ => return None,
        })
    }

    /// The value as bytes when it is a string of either length.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::ShortStr(b) | Value::LongStr(b) | Value::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    /// Equality as RabbitMQ's headers exchange sees it: integers of any width
    /// compare by value, short and long strings by bytes.
    pub fn loosely_equals(&self, other: &Value) -> bool {
        if let (Some(a), Some(b)) = (self.as_integer(), other.as_integer()) {
            return a == b;
        }
        if let (Some(a), Some(b)) = (self.as_bytes(), other.as_bytes()) {
            return a == b;
        }
        self == other
    }

    /// The value as an integer-like number, for arguments such as `x-max-length`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_integer().and_then(|v| i64::try_from(v).ok())
    }

    /// A copy that shares no buffer with the original (see [`Properties::detach`]).
    pub fn detached(&self) -> Value {
        match self {
            Value::ShortStr(b) => Value::ShortStr(Bytes::copy_from_slice(b)),
            Value::LongStr(b) => Value::LongStr(Bytes::copy_from_slice(b)),
            Value::ByteArray(b) => Value::ByteArray(Bytes::copy_from_slice(b)),
            Value::Array(a) => Value::Array(a.iter().map(Value::detached).collect()),
            Value::Table(t) => Value::Table(t.detached()),
            other => other.clone(),
        }
    }

    /// The value as UTF-8 text, for string arguments.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// An ordered key/value table (AMQP field table semantics: order kept, keys unique).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table(pub Vec<(String, Value)>);

impl Table {
    /// Looks a key up.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Inserts or replaces a key.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// A copy that shares no buffer with the original.
    pub fn detached(&self) -> Table {
        Table(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.detached()))
                .collect(),
        )
    }

    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &(String, Value)> {
        self.0.iter()
    }
}

/// Message metadata shared by every protocol (see docs for the per-protocol mapping).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    /// MIME type of the body.
    pub content_type: Option<Bytes>,
    /// Encoding of the body (e.g. gzip).
    pub content_encoding: Option<Bytes>,
    /// Application headers (AMQP headers, MQTT 5 user properties).
    pub headers: Option<Table>,
    /// 1 = transient, 2 = persistent.
    pub delivery_mode: Option<u8>,
    /// Priority 0..=255.
    pub priority: Option<u8>,
    /// Correlates a reply with its request.
    pub correlation_id: Option<Bytes>,
    /// Where replies go.
    pub reply_to: Option<Bytes>,
    /// Per-message TTL in milliseconds, as text (AMQP `expiration`).
    pub expiration: Option<Bytes>,
    /// Application message id.
    pub message_id: Option<Bytes>,
    /// Seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// Application message type (AMQP `type`).
    pub kind: Option<Bytes>,
    /// Authenticated user that published (validated by the broker).
    pub user_id: Option<Bytes>,
    /// Publishing application.
    pub app_id: Option<Bytes>,
    /// Deprecated AMQP cluster id, carried through untouched.
    pub cluster_id: Option<Bytes>,
}

impl Properties {
    /// The extra routing keys of RabbitMQ's sender-selected distribution: the
    /// string values of the `CC` (kept on the message) and `BCC` (removed
    /// before delivery) header arrays.
    pub fn cc_keys(&self, header: &str) -> Vec<Bytes> {
        match self.headers.as_ref().and_then(|h| h.get(header)) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_bytes().map(Bytes::copy_from_slice))
                .collect(),
            Some(v) => v
                .as_bytes()
                .map(Bytes::copy_from_slice)
                .into_iter()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Makes every field own its bytes. Decoded fields are slices of a socket
    /// read buffer; a message that waits in a queue must not pin that buffer.
    pub fn detach(&mut self) {
        for field in [
            &mut self.content_type,
            &mut self.content_encoding,
            &mut self.correlation_id,
            &mut self.reply_to,
            &mut self.expiration,
            &mut self.message_id,
            &mut self.kind,
            &mut self.user_id,
            &mut self.app_id,
            &mut self.cluster_id,
        ] {
            if let Some(b) = field.as_mut() {
                *b = Bytes::copy_from_slice(b);
            }
        }
        if let Some(h) = self.headers.as_mut() {
            *h = h.detached();
        }
    }

    /// True when the publisher asked for the message to survive a restart.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }
}

/// A routed message: where it was published, its metadata and its body.
///
/// Shared by `Arc` between every queue it was routed to, so fan-out copies nothing.
#[derive(Debug)]
pub struct Message {
    /// Exchange it was published to ("" for the default exchange).
    pub exchange: Bytes,
    /// Routing key it was published with.
    pub routing_key: Bytes,
    /// Metadata.
    pub properties: Properties,
    /// Payload.
    pub body: Bytes,
}

impl Message {
    /// Builds a shareable message.
    pub fn new(
        exchange: Bytes,
        routing_key: Bytes,
        properties: Properties,
        body: Bytes,
    ) -> Arc<Self> {
        Arc::new(Message {
            exchange,
            routing_key,
            properties,
            body,
        })
    }

    /// The same body under other metadata: what dead-lettering, delay
    /// bookkeeping and per-delivery headers need (the body is shared, not copied).
    pub fn with_properties(&self, properties: Properties) -> Arc<Self> {
        self.rerouted(self.exchange.clone(), self.routing_key.clone(), properties)
    }

    /// The same body under another exchange, routing key and metadata.
    pub fn rerouted(
        &self,
        exchange: Bytes,
        routing_key: Bytes,
        properties: Properties,
    ) -> Arc<Self> {
        Arc::new(Message {
            exchange,
            routing_key,
            properties,
            body: self.body.clone(),
        })
    }

    /// Body size in bytes.
    pub fn size(&self) -> usize {
        self.body.len()
    }
}
