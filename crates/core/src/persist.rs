//! The seam between the core and durable storage.
//!
//! The core decides *what* must be durable (persistent messages in durable
//! queues, durable definitions) and calls a [`Persistence`]; the server plugs
//! the store crate in behind it, and unit tests run without one. This module
//! also owns the protocol-neutral binary encoding of messages and definitions
//! that the store keeps as opaque payloads (format version byte first, so a
//! later release can migrate).

use crate::exchange::{ExchangeKind, ExchangeOptions};
use crate::message::{Message, Properties, Table, Value};
use crate::queue::QueueOptions;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use thiserror::Error;

/// Format version of every payload this module writes.
pub const ENCODING_VERSION: u8 = 1;
/// Nesting limit for tables and arrays when decoding.
const MAX_DEPTH: usize = 64;

/// Where a stored payload lives, so a paged-out message can be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    /// Segment number.
    pub segment: u64,
    /// Byte offset of the payload in the segment.
    pub offset: u64,
    /// Payload length.
    pub len: u32,
}

/// A message copy held by the store on behalf of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The store queue id it is filed under (a durable queue's id, or a queue's scratch id
    /// for transient messages paged out of memory).
    pub queue: u64,
    /// The store's message id.
    pub msg_id: u64,
    /// Where its payload is, when known.
    pub at: Option<StoredAt>,
}

/// The memory budget for message bodies waiting in queues: above it, queues
/// keep new messages on disk only (paging) and read them back when delivered.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    entries: AtomicUsize,
}

/// Bookkeeping bytes per queued message (slot, index entry), for the memory estimate.
pub const ENTRY_OVERHEAD: usize = 160;

impl MemoryBudget {
    /// A budget of `limit` bytes of bodies.
    pub fn new(limit: usize) -> Self {
        MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
        }
    }

    /// True when `size` more bytes would pass the budget.
    pub fn would_exceed(&self, size: usize) -> bool {
        self.used.load(Ordering::Relaxed) + size > self.limit
    }

    /// Counts bytes now held in memory.
    pub fn take(&self, size: usize) {
        self.used.fetch_add(size, Ordering::Relaxed);
    }

    /// Bytes no longer held in memory.
    pub fn release(&self, size: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(size))
            });
    }

    /// Counts messages added to queues.
    pub fn entries_added(&self, n: usize) {
        self.entries.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts messages that left queues.
    pub fn entries_removed(&self, n: usize) {
        let _ = self
            .entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Estimated bytes queues hold in memory: loaded bodies plus per-message bookkeeping.
    pub fn in_use(&self) -> usize {
        self.used() + self.entries.load(Ordering::Relaxed) * ENTRY_OVERHEAD
    }

    /// Bytes of bodies held in queues now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Durable storage as the core sees it. Appends never block on the disk;
/// [`Persistence::when_durable`] reports when everything appended so far is fsynced.
pub trait Persistence: Send + Sync {
    /// A fresh, never reused message id.
    fn next_msg_id(&self) -> u64;
    /// A fresh, never reused durable queue id.
    fn next_queue_id(&self) -> u64;
    /// Writes a message once for all the store queues listed; returns where
    /// its payload lives (None when the store refused it).
    fn publish(&self, msg_id: u64, queues: &[u64], message: &Message) -> Option<StoredAt>;
    /// Reads a payload written by [`Persistence::publish`] back (paging).
    fn read(&self, at: StoredAt) -> Option<Bytes>;
    /// The message left the queue for good (acked, dropped or purged).
    fn ack(&self, queue: u64, msg_id: u64);
    /// The message was handed to a consumer (so it comes back flagged redelivered).
    fn delivered(&self, queue: u64, msg_id: u64);
    /// Calls `done` once everything appended before this call is on disk.
    fn when_durable(&self, done: Box<dyn FnOnce() + Send>);
    /// A durable definition was created or changed (`kind` = "exchange", "queue", "binding").
    fn put_definition(&self, kind: &str, key: &str, value: &[u8]);
    /// A durable definition went away.
    fn delete_definition(&self, kind: &str, key: &str);
    /// A durable queue was deleted with everything in it.
    fn queue_deleted(&self, queue: u64);
    /// Opens (or creates) the log of stream queue `queue` declared in the vhost incarnation
    /// `vhost`. None when this persistence keeps no streams (the caller falls back to memory).
    fn open_stream(
        &self,
        vhost: u64,
        queue: u64,
        settings: &crate::stream::StreamSettings,
    ) -> Option<Arc<dyn crate::stream::StreamLog>> {
        let _ = (vhost, queue, settings);
        None
    }
}

/// Shared handle to the persistence layer.
pub type SharedPersistence = Arc<dyn Persistence>;

/// A payload that could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Ran out of bytes.
    #[error("truncated payload")]
    Truncated,
    /// Unknown format version or tag.
    #[error("unknown {what} {value}")]
    Unknown {
        /// What was being decoded.
        what: &'static str,
        /// The bad value.
        value: u8,
    },
    /// Text that is not UTF-8.
    #[error("invalid UTF-8")]
    Utf8,
    /// Nested too deeply.
    #[error("nesting too deep")]
    TooDeep,
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            Err(DecodeError::Truncated)
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError::Utf8)
    }
    fn opt_bytes(&mut self) -> Result<Option<Bytes>, DecodeError> {
        Ok(if self.u8()? == 1 {
            Some(self.bytes()?)
        } else {
            None
        })
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_opt(out: &mut BytesMut, b: &Option<Bytes>) {
    match b {
        Some(b) => {
            out.put_u8(1);
            put_bytes(out, b);
        }
        None => out.put_u8(0),
    }
}

fn put_value(out: &mut BytesMut, v: &Value) {
    match v {
        Value::Bool(b) => {
            out.put_u8(0);
            out.put_u8(*b as u8);
        }
        Value::I8(x) => {
            out.put_u8(1);
            out.put_i8(*x);
        }
        Value::U8(x) => {
            out.put_u8(2);
            out.put_u8(*x);
        }
        Value::I16(x) => {
            out.put_u8(3);
            out.put_i16_le(*x);
        }
        Value::U16(x) => {
            out.put_u8(4);
            out.put_u16_le(*x);
        }
        Value::I32(x) => {
            out.put_u8(5);
            out.put_i32_le(*x);
        }
        Value::U32(x) => {
            out.put_u8(6);
            out.put_u32_le(*x);
        }
        Value::I64(x) => {
            out.put_u8(7);
            out.put_i64_le(*x);
        }
        Value::F32(x) => {
            out.put_u8(8);
            out.put_f32_le(*x);
        }
        Value::F64(x) => {
            out.put_u8(9);
            out.put_f64_le(*x);
        }
        Value::Decimal { scale, value } => {
            out.put_u8(10);
            out.put_u8(*scale);
            out.put_u32_le(*value);
        }
        Value::ShortStr(b) => {
            out.put_u8(11);
            put_bytes(out, b);
        }
        Value::LongStr(b) => {
            out.put_u8(12);
            put_bytes(out, b);
        }
        Value::Array(a) => {
            out.put_u8(13);
            out.put_u32_le(a.len() as u32);
            for v in a {
                put_value(out, v);
            }
        }
        Value::Timestamp(t) => {
            out.put_u8(14);
            out.put_u64_le(*t);
        }
        Value::Table(t) => {
            out.put_u8(15);
            put_table(out, t);
        }
        Value::Void => out.put_u8(16),
        Value::ByteArray(b) => {
            out.put_u8(17);
            put_bytes(out, b);
        }
    }
}

fn put_table(out: &mut BytesMut, t: &Table) {
    out.put_u32_le(t.0.len() as u32);
    for (k, v) in t.iter() {
        put_bytes(out, k.as_bytes());
        put_value(out, v);
    }
}

fn read_value(r: &mut Reader, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    Ok(match r.u8()? {
        0 => Value::Bool(r.bool()?),
        1 => Value::I8(r.u8()? as i8),
        2 => Value::U8(r.u8()?),
        3 => {
            r.need(2)?;
            Value::I16(r.0.get_i16_le())
        }
        4 => {
            r.need(2)?;
            Value::U16(r.0.get_u16_le())
        }
        5 => Value::I32(r.u32()? as i32),
        6 => Value::U32(r.u32()?),
        7 => Value::I64(r.u64()? as i64),
        8 => Value::F32(f32::from_bits(r.u32()?)),
        9 => Value::F64(f64::from_bits(r.u64()?)),
        10 => Value::Decimal {
            scale: r.u8()?,
            value: r.u32()?,
        },
        11 => Value::ShortStr(r.bytes()?),
        12 => Value::LongStr(r.bytes()?),
        13 => {
            let n = r.u32()? as usize;
            let mut a = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                a.push(read_value(r, depth + 1)?);
            }
            Value::Array(a)
        }
        14 => Value::Timestamp(r.u64()?),
        15 => Value::Table(read_table(r, depth + 1)?),
        16 => Value::Void,
        17 => Value::ByteArray(r.bytes()?),
        tag => {
            return Err(DecodeError::Unknown {
                what: "value tag",
                value: tag,
            });
        }
    })
}

fn read_table(r: &mut Reader, depth: usize) -> Result<Table, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    let n = r.u32()? as usize;
    let mut t = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let k = r.string()?;
        t.push((k, read_value(r, depth + 1)?));
    }
    Ok(Table(t))
}

fn check_version(r: &mut Reader) -> Result<(), DecodeError> {
    match r.u8()? {
        ENCODING_VERSION => Ok(()),
        v => Err(DecodeError::Unknown {
            what: "encoding version",
            value: v,
        }),
    }
}

/// Encodes a message (exchange, routing key, properties, body).
pub fn encode_message(m: &Message) -> BytesMut {
    let p = &m.properties;
    let mut out =
        BytesMut::with_capacity(64 + m.exchange.len() + m.routing_key.len() + m.body.len());
    out.put_u8(ENCODING_VERSION);
    put_bytes(&mut out, &m.exchange);
    put_bytes(&mut out, &m.routing_key);
    for field in [&p.content_type, &p.content_encoding] {
        put_opt(&mut out, field);
    }
    match &p.headers {
        Some(t) => {
            out.put_u8(1);
            put_table(&mut out, t);
        }
        None => out.put_u8(0),
    }
    for b in [p.delivery_mode, p.priority] {
        match b {
            Some(v) => {
                out.put_u8(1);
                out.put_u8(v);
            }
            None => out.put_u8(0),
        }
    }
    for field in [&p.correlation_id, &p.reply_to, &p.expiration, &p.message_id] {
        put_opt(&mut out, field);
    }
    match p.timestamp {
        Some(t) => {
            out.put_u8(1);
            out.put_u64_le(t);
        }
        None => out.put_u8(0),
    }
    for field in [&p.kind, &p.user_id, &p.app_id, &p.cluster_id] {
        put_opt(&mut out, field);
    }
    put_bytes(&mut out, &m.body);
    out
}

/// Decodes what [`encode_message`] wrote; the body is a zero-copy slice of `payload`.
pub fn decode_message(payload: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader(payload);
    check_version(&mut r)?;
    let exchange = r.bytes()?;
    let routing_key = r.bytes()?;
    let content_type = r.opt_bytes()?;
    let content_encoding = r.opt_bytes()?;
    let headers = if r.bool()? {
        Some(read_table(&mut r, 0)?)
    } else {
        None
    };
    let delivery_mode = if r.bool()? { Some(r.u8()?) } else { None };
    let priority = if r.bool()? { Some(r.u8()?) } else { None };
    let correlation_id = r.opt_bytes()?;
    let reply_to = r.opt_bytes()?;
    let expiration = r.opt_bytes()?;
    let message_id = r.opt_bytes()?;
    let timestamp = if r.bool()? { Some(r.u64()?) } else { None };
    let kind = r.opt_bytes()?;
    let user_id = r.opt_bytes()?;
    let app_id = r.opt_bytes()?;
    let cluster_id = r.opt_bytes()?;
    let body = r.bytes()?;
    Ok(Message {
        exchange,
        routing_key,
        properties: Properties {
            content_type,
            content_encoding,
            headers,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            kind,
            user_id,
            app_id,
            cluster_id,
        },
        body,
    })
}

/// A durable exchange as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Attributes.
    pub options: ExchangeOptions,
}

/// A durable queue as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDef {
    /// Vhost.
    pub vhost: String,
    /// Name.
    pub name: String,
    /// Store id of the queue.
    pub id: u64,
    /// Attributes.
    pub options: QueueOptions,
}

/// A binding between durable objects as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingDef {
    /// Vhost.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// True when the destination is an exchange, false for a queue.
    pub to_exchange: bool,
    /// Destination name.
    pub destination: String,
    /// Binding key.
    pub key: String,
    /// Arguments.
    pub arguments: Table,
}

/// Set in the stored exchange kind of an `x-delayed-message` exchange.
const DELAYED_FLAG: u8 = 0x10;

fn kind_tag(k: ExchangeKind) -> u8 {
    match k {
        ExchangeKind::Direct => 0,
        ExchangeKind::Fanout => 1,
        ExchangeKind::Topic => 2,
        ExchangeKind::Headers => 3,
    }
}

impl ExchangeDef {
    /// Key in the definition table.
    pub fn key(vhost: &str, name: &str) -> String {
        format!("{vhost}\u{0}{name}")
    }

    /// Encodes the definition.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(ENCODING_VERSION);
        put_bytes(&mut out, self.vhost.as_bytes());
        put_bytes(&mut out, self.name.as_bytes());
        out.put_u8(
            kind_tag(self.options.kind)
                | if self.options.delayed {
                    DELAYED_FLAG
                } else {
                    0
                },
        );
        out.put_u8(self.options.durable as u8);
        out.put_u8(self.options.auto_delete as u8);
        out.put_u8(self.options.internal as u8);
        put_table(&mut out, &self.options.arguments);
        out.to_vec()
    }

    /// Decodes a definition.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(Bytes::copy_from_slice(b));
        check_version(&mut r)?;
        let vhost = r.string()?;
        let name = r.string()?;
        let tag = r.u8()?;
        let delayed = tag & DELAYED_FLAG != 0;
        let kind = match tag & !DELAYED_FLAG {
            0 => ExchangeKind::Direct,
            1 => ExchangeKind::Fanout,
            2 => ExchangeKind::Topic,
            3 => ExchangeKind::Headers,
            v => {
                return Err(DecodeError::Unknown {
                    what: "exchange kind",
                    value: v,
                });
            }
        };
        Ok(ExchangeDef {
            vhost,
            name,
            options: ExchangeOptions {
                kind,
                durable: r.bool()?,
                auto_delete: r.bool()?,
                internal: r.bool()?,
                arguments: read_table(&mut r, 0)?,
                delayed,
            },
        })
    }
}

impl QueueDef {
    /// Key in the definition table.
    pub fn key(vhost: &str, name: &str) -> String {
        format!("{vhost}\u{0}{name}")
    }

    /// Encodes the definition.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(ENCODING_VERSION);
        put_bytes(&mut out, self.vhost.as_bytes());
        put_bytes(&mut out, self.name.as_bytes());
        out.put_u64_le(self.id);
        out.put_u8(self.options.durable as u8);
        out.put_u8(self.options.exclusive as u8);
        out.put_u8(self.options.auto_delete as u8);
        put_table(&mut out, &self.options.arguments);
        out.to_vec()
    }

    /// Decodes a definition.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(Bytes::copy_from_slice(b));
        check_version(&mut r)?;
        Ok(QueueDef {
            vhost: r.string()?,
            name: r.string()?,
            id: r.u64()?,
            options: QueueOptions {
                durable: r.bool()?,
                exclusive: r.bool()?,
                auto_delete: r.bool()?,
                arguments: read_table(&mut r, 0)?,
            },
        })
    }
}

impl BindingDef {
    /// Key in the definition table: every field, so distinct bindings never collide.
    pub fn key(&self) -> String {
        let mut args = BytesMut::new();
        put_table(&mut args, &self.arguments);
        let hex: String = args.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.vhost,
            self.source,
            if self.to_exchange { "e" } else { "q" },
            self.destination,
            self.key,
            hex
        )
    }

    /// Encodes the definition.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u8(ENCODING_VERSION);
        for s in [&self.vhost, &self.source] {
            put_bytes(&mut out, s.as_bytes());
        }
        out.put_u8(self.to_exchange as u8);
        for s in [&self.destination, &self.key] {
            put_bytes(&mut out, s.as_bytes());
        }
        put_table(&mut out, &self.arguments);
        out.to_vec()
    }

    /// Decodes a definition.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(Bytes::copy_from_slice(b));
        check_version(&mut r)?;
        Ok(BindingDef {
            vhost: r.string()?,
            source: r.string()?,
            to_exchange: r.bool()?,
            destination: r.string()?,
            key: r.string()?,
            arguments: read_table(&mut r, 0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            any::<u16>().prop_map(Value::U16),
            any::<Vec<u8>>().prop_map(|v| Value::LongStr(v.into())),
            any::<u64>().prop_map(Value::Timestamp),
            Just(Value::Void),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z]{1,5}", inner), 0..4)
                    .prop_map(|v| Value::Table(Table(v))),
            ]
        })
    }

    proptest! {
        #[test]
        fn message_round_trip(
            body in any::<Vec<u8>>(),
            headers in proptest::collection::vec(("[a-z]{1,5}", value()), 0..4),
            ts in any::<Option<u64>>(),
            mode in any::<Option<u8>>(),
        ) {
            let m = Message {
                exchange: Bytes::from_static(b"ex"),
                routing_key: Bytes::from_static(b"a.b"),
                properties: Properties {
                    headers: Some(Table(headers)),
                    timestamp: ts,
                    delivery_mode: mode,
                    correlation_id: Some(Bytes::from_static(b"c")),
                    ..Default::default()
                },
                body: body.into(),
            };
            let back = decode_message(encode_message(&m).freeze()).unwrap();
            prop_assert_eq!(back.properties, m.properties);
            prop_assert_eq!(back.body, m.body);
            prop_assert_eq!(back.routing_key, m.routing_key);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in any::<Vec<u8>>()) {
            let _ = decode_message(Bytes::from(bytes.clone()));
            let _ = QueueDef::decode(&bytes);
            let _ = ExchangeDef::decode(&bytes);
            let _ = BindingDef::decode(&bytes);
        }
    }

    #[test]
    fn definitions_round_trip() {
        let q = QueueDef {
            vhost: "/".into(),
            name: "q".into(),
            id: 7,
            options: QueueOptions {
                durable: true,
                arguments: Table(vec![("x-max-length".into(), Value::I32(3))]),
                ..Default::default()
            },
        };
        assert_eq!(QueueDef::decode(&q.encode()).unwrap(), q);
        let b = BindingDef {
            vhost: "/".into(),
            source: "amq.topic".into(),
            to_exchange: false,
            destination: "q".into(),
            key: "a.#".into(),
            arguments: Table::default(),
        };
        assert_eq!(BindingDef::decode(&b.encode()).unwrap(), b);
        assert_eq!(
            decode_message(Bytes::from_static(&[9])).unwrap_err(),
            DecodeError::Unknown {
                what: "encoding version",
                value: 9
            }
        );
    }
}
