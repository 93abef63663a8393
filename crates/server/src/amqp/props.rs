//! The mapping between AMQP 0-9-1 wire properties and the core message model.
//!
//! AMQP carries everything the core models, so the mapping is one to one; it
//! is the reference row of the cross-protocol table in docs/protocols.

use bytes::Bytes;
use tributary_amqp::{BasicProperties, FieldTable, FieldValue, ShortStr};
use tributary_core::{Properties, Table, Value};

fn bytes(s: Option<ShortStr>) -> Option<Bytes> {
    s.map(ShortStr::into_bytes)
}

fn short(b: &Option<Bytes>) -> Option<ShortStr> {
    b.as_ref().map(|b| ShortStr::from_bytes(b.clone()))
}

/// Wire value → core value.
pub fn value_to_core(v: FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(b),
        FieldValue::I8(x) => Value::I8(x),
        FieldValue::U8(x) => Value::U8(x),
        FieldValue::I16(x) => Value::I16(x),
        FieldValue::U16(x) => Value::U16(x),
        FieldValue::I32(x) => Value::I32(x),
        FieldValue::U32(x) => Value::U32(x),
        FieldValue::I64(x) => Value::I64(x),
        FieldValue::F32(x) => Value::F32(x),
        FieldValue::F64(x) => Value::F64(x),
        FieldValue::Decimal { scale, value } => Value::Decimal { scale, value },
        FieldValue::ShortStr(s) => Value::ShortStr(s.into_bytes()),
        FieldValue::LongStr(b) => Value::LongStr(b),
        FieldValue::Array(a) => Value::Array(a.into_iter().map(value_to_core).collect()),
        FieldValue::Timestamp(t) => Value::Timestamp(t),
        FieldValue::Table(t) => Value::Table(table_to_core(t)),
        FieldValue::Void => Value::Void,
        FieldValue::ByteArray(b) => Value::ByteArray(b),
    }
}

/// Core value → wire value.
pub fn value_to_wire(v: &Value) -> FieldValue {
    match v {
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::I8(x) => FieldValue::I8(*x),
        Value::U8(x) => FieldValue::U8(*x),
        Value::I16(x) => FieldValue::I16(*x),
        Value::U16(x) => FieldValue::U16(*x),
        Value::I32(x) => FieldValue::I32(*x),
        Value::U32(x) => FieldValue::U32(*x),
        Value::I64(x) => FieldValue::I64(*x),
        Value::F32(x) => FieldValue::F32(*x),
        Value::F64(x) => FieldValue::F64(*x),
        Value::Decimal { scale, value } => FieldValue::Decimal {
            scale: *scale,
            value: *value,
        },
        Value::ShortStr(s) => FieldValue::ShortStr(ShortStr::from_bytes(s.clone())),
        Value::LongStr(b) => FieldValue::LongStr(b.clone()),
        Value::Array(a) => FieldValue::Array(a.iter().map(value_to_wire).collect()),
        Value::Timestamp(t) => FieldValue::Timestamp(*t),
        Value::Table(t) => FieldValue::Table(table_to_wire(t)),
        Value::Void => FieldValue::Void,
        Value::ByteArray(b) => FieldValue::ByteArray(b.clone()),
    }
}

/// Wire table → core table.
pub fn table_to_core(t: FieldTable) -> Table {
    Table(
        t.0.into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.as_bytes()).into_owned(),
                    value_to_core(v),
                )
            })
            .collect(),
    )
}

/// Core table → wire table.
pub fn table_to_wire(t: &Table) -> FieldTable {
    FieldTable(
        t.iter()
            .map(|(k, v)| (ShortStr::from(k.as_str()), value_to_wire(v)))
            .collect(),
    )
}

/// Wire properties → core properties (consumes, so strings are moved, not copied).
pub fn to_core(p: BasicProperties) -> Properties {
    Properties {
        content_type: bytes(p.content_type),
        content_encoding: bytes(p.content_encoding),
        headers: p.headers.map(table_to_core),
        delivery_mode: p.delivery_mode,
        priority: p.priority,
        correlation_id: bytes(p.correlation_id),
        reply_to: bytes(p.reply_to),
        expiration: bytes(p.expiration),
        message_id: bytes(p.message_id),
        timestamp: p.timestamp,
        kind: bytes(p.kind),
        user_id: bytes(p.user_id),
        app_id: bytes(p.app_id),
        cluster_id: bytes(p.cluster_id),
    }
}

/// Core properties → wire properties.
pub fn to_wire(p: &Properties) -> BasicProperties {
    BasicProperties {
        content_type: short(&p.content_type),
        content_encoding: short(&p.content_encoding),
        headers: p.headers.as_ref().map(table_to_wire),
        delivery_mode: p.delivery_mode,
        priority: p.priority,
        correlation_id: short(&p.correlation_id),
        reply_to: short(&p.reply_to),
        expiration: short(&p.expiration),
        message_id: short(&p.message_id),
        timestamp: p.timestamp,
        kind: short(&p.kind),
        user_id: short(&p.user_id),
        app_id: short(&p.app_id),
        cluster_id: short(&p.cluster_id),
    }
}
