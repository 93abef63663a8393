//! AMQP 0-9-1 methods: one enum variant per method, with the spec's argument names.
//!
//! The table below is the single source of the wire layout: ids, field order and field types.
//! Consecutive `bool` fields pack into one octet, least significant bit first (spec 4.2.5.2).
//! The spec's `type` argument (exchange.declare) is named `kind`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::shortstr::ShortStr;
use crate::table::{self, FieldTable};

/// How one argument type is written and read; bits pack through the writer's state.
trait Field: Sized {
    fn put(&self, w: &mut Writer<'_>);
    fn get(r: &mut Reader) -> Result<Self, DecodeError>;
}

impl Field for bool {
    fn put(&self, w: &mut Writer<'_>) {
        w.bit(*self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.bit()
    }
}

impl Field for u8 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u8(*self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u8()
    }
}

impl Field for u16 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u16(*self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u16()
    }
}

impl Field for u32 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u32(*self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u32()
    }
}

impl Field for u64 {
    fn put(&self, w: &mut Writer<'_>) {
        w.u64(*self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u64()
    }
}

impl Field for ShortStr {
    fn put(&self, w: &mut Writer<'_>) {
        w.shortstr(self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.shortstr()
    }
}

impl Field for Bytes {
    fn put(&self, w: &mut Writer<'_>) {
        w.longstr(self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        r.longstr()
    }
}

impl Field for FieldTable {
    fn put(&self, w: &mut Writer<'_>) {
        table::write_table(w, self)
    }
    fn get(r: &mut Reader) -> Result<Self, DecodeError> {
        table::read_table(r, 0)
    }
}

macro_rules! methods {
    ($( $(#[doc = $doc:literal])* $variant:ident = ($class:literal, $method:literal)
        $({ $($field:ident : $ty:ty),* $(,)? })? , )*) => {
        /// Every AMQP 0-9-1 method of the classes connection, channel, exchange, queue, basic,
        /// confirm and tx, with RabbitMQ's extensions.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Method {
            $(
                $(#[doc = $doc])*
                $variant $({ $(
                    #[doc = concat!("The `", stringify!($field), "` argument.")]
                    $field: $ty
                ),* })?,
            )*
        }

        impl Method {
            /// The class id (10 connection, 20 channel, 40 exchange, 50 queue, 60 basic, 85 confirm, 90 tx).
            pub fn class_id(&self) -> u16 {
                match self { $( Method::$variant { .. } => $class, )* }
            }

            /// The method id within its class.
            pub fn method_id(&self) -> u16 {
                match self { $( Method::$variant { .. } => $method, )* }
            }

            /// The spec's dotted name, e.g. `"basic.publish"`, for logs and error texts.
            pub fn name(&self) -> &'static str {
                match self { $( Method::$variant { .. } => method_name($class, $method).unwrap_or("unknown"), )* }
            }

            /// Appends class id, method id and arguments (the payload of a method frame).
            pub fn encode(&self, out: &mut BytesMut) {
                out.put_u16(self.class_id());
                out.put_u16(self.method_id());
                #[allow(unused_mut, unused_variables)]
                let mut w = Writer::new(out);
                match self {
                    $( Method::$variant $({ $($field),* })? => { $( $( Field::put($field, &mut w); )* )? } )*
                }
            }

            /// Decodes a method frame payload. Short strings and long strings in the result are
            /// slices of `payload`; trailing octets are an error.
            pub fn decode(payload: Bytes) -> Result<Method, DecodeError> {
                let mut r = Reader::new(payload);
                let class_id = r.u16()?;
                let method_id = r.u16()?;
                let m = match (class_id, method_id) {
                    $( ($class, $method) => Method::$variant $({ $( $field: <$ty as Field>::get(&mut r)? ),* })?, )*
                    _ => return Err(DecodeError::UnknownMethod { class_id, method_id }),
                };
                r.finish()?;
                Ok(m)
            }
        }
    };
}

/// The spec's dotted name of a class/method pair, if it is known.
pub fn method_name(class_id: u16, method_id: u16) -> Option<&'static str> {
    Some(match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 20) => "connection.secure",
        (10, 21) => "connection.secure-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 41) => "connection.open-ok",
        (10, 50) => "connection.close",
        (10, 51) => "connection.close-ok",
        (10, 60) => "connection.blocked",
        (10, 61) => "connection.unblocked",
        (10, 70) => "connection.update-secret",
        (10, 71) => "connection.update-secret-ok",
        (20, 10) => "channel.open",
        (20, 11) => "channel.open-ok",
        (20, 20) => "channel.flow",
        (20, 21) => "channel.flow-ok",
        (20, 40) => "channel.close",
        (20, 41) => "channel.close-ok",
        (40, 10) => "exchange.declare",
        (40, 11) => "exchange.declare-ok",
        (40, 20) => "exchange.delete",
        (40, 21) => "exchange.delete-ok",
        (40, 30) => "exchange.bind",
        (40, 31) => "exchange.bind-ok",
        (40, 40) => "exchange.unbind",
        (40, 51) => "exchange.unbind-ok",
        (50, 10) => "queue.declare",
        (50, 11) => "queue.declare-ok",
        (50, 20) => "queue.bind",
        (50, 21) => "queue.bind-ok",
        (50, 30) => "queue.purge",
        (50, 31) => "queue.purge-ok",
        (50, 40) => "queue.delete",
        (50, 41) => "queue.delete-ok",
        (50, 50) => "queue.unbind",
        (50, 51) => "queue.unbind-ok",
        (60, 10) => "basic.qos",
        (60, 11) => "basic.qos-ok",
        (60, 20) => "basic.consume",
        (60, 21) => "basic.consume-ok",
        (60, 30) => "basic.cancel",
        (60, 31) => "basic.cancel-ok",
        (60, 40) => "basic.publish",
        (60, 50) => "basic.return",
        (60, 60) => "basic.deliver",
        (60, 70) => "basic.get",
        (60, 71) => "basic.get-ok",
        (60, 72) => "basic.get-empty",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 100) => "basic.recover-async",
        (60, 110) => "basic.recover",
        (60, 111) => "basic.recover-ok",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (85, 11) => "confirm.select-ok",
        (90, 10) => "tx.select",
        (90, 11) => "tx.select-ok",
        (90, 20) => "tx.commit",
        (90, 21) => "tx.commit-ok",
        (90, 30) => "tx.rollback",
        (90, 31) => "tx.rollback-ok",
        _ => return None,
    })
}

methods! {
    /// `connection.start`.
    ConnectionStart = (10, 10) { version_major: u8, version_minor: u8, server_properties: FieldTable, mechanisms: Bytes, locales: Bytes },
    /// `connection.start-ok`.
    ConnectionStartOk = (10, 11) { client_properties: FieldTable, mechanism: ShortStr, response: Bytes, locale: ShortStr },
    /// `connection.secure`.
    ConnectionSecure = (10, 20) { challenge: Bytes },
    /// `connection.secure-ok`.
    ConnectionSecureOk = (10, 21) { response: Bytes },
    /// `connection.tune`.
    ConnectionTune = (10, 30) { channel_max: u16, frame_max: u32, heartbeat: u16 },
    /// `connection.tune-ok`.
    ConnectionTuneOk = (10, 31) { channel_max: u16, frame_max: u32, heartbeat: u16 },
    /// `connection.open`.
    ConnectionOpen = (10, 40) { virtual_host: ShortStr, capabilities: ShortStr, insist: bool },
    /// `connection.open-ok`.
    ConnectionOpenOk = (10, 41) { known_hosts: ShortStr },
    /// `connection.close`.
    ConnectionClose = (10, 50) { reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16 },
    /// `connection.close-ok`.
    ConnectionCloseOk = (10, 51),
    /// `connection.blocked`.
    ConnectionBlocked = (10, 60) { reason: ShortStr },
    /// `connection.unblocked`.
    ConnectionUnblocked = (10, 61),
    /// `connection.update-secret`.
    ConnectionUpdateSecret = (10, 70) { new_secret: Bytes, reason: ShortStr },
    /// `connection.update-secret-ok`.
    ConnectionUpdateSecretOk = (10, 71),
    /// `channel.open`.
    ChannelOpen = (20, 10) { out_of_band: ShortStr },
    /// `channel.open-ok`.
    ChannelOpenOk = (20, 11) { channel_id: Bytes },
    /// `channel.flow`.
    ChannelFlow = (20, 20) { active: bool },
    /// `channel.flow-ok`.
    ChannelFlowOk = (20, 21) { active: bool },
    /// `channel.close`.
    ChannelClose = (20, 40) { reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16 },
    /// `channel.close-ok`.
    ChannelCloseOk = (20, 41),
    /// `exchange.declare`.
    ExchangeDeclare = (40, 10) { ticket: u16, exchange: ShortStr, kind: ShortStr, passive: bool, durable: bool, auto_delete: bool, internal: bool, nowait: bool, arguments: FieldTable },
    /// `exchange.declare-ok`.
    ExchangeDeclareOk = (40, 11),
    /// `exchange.delete`.
    ExchangeDelete = (40, 20) { ticket: u16, exchange: ShortStr, if_unused: bool, nowait: bool },
    /// `exchange.delete-ok`.
    ExchangeDeleteOk = (40, 21),
    /// `exchange.bind`.
    ExchangeBind = (40, 30) { ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr, nowait: bool, arguments: FieldTable },
    /// `exchange.bind-ok`.
    ExchangeBindOk = (40, 31),
    /// `exchange.unbind`.
    ExchangeUnbind = (40, 40) { ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr, nowait: bool, arguments: FieldTable },
    /// `exchange.unbind-ok`.
    ExchangeUnbindOk = (40, 51),
    /// `queue.declare`.
    QueueDeclare = (50, 10) { ticket: u16, queue: ShortStr, passive: bool, durable: bool, exclusive: bool, auto_delete: bool, nowait: bool, arguments: FieldTable },
    /// `queue.declare-ok`.
    QueueDeclareOk = (50, 11) { queue: ShortStr, message_count: u32, consumer_count: u32 },
    /// `queue.bind`.
    QueueBind = (50, 20) { ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr, nowait: bool, arguments: FieldTable },
    /// `queue.bind-ok`.
    QueueBindOk = (50, 21),
    /// `queue.purge`.
    QueuePurge = (50, 30) { ticket: u16, queue: ShortStr, nowait: bool },
    /// `queue.purge-ok`.
    QueuePurgeOk = (50, 31) { message_count: u32 },
    /// `queue.delete`.
    QueueDelete = (50, 40) { ticket: u16, queue: ShortStr, if_unused: bool, if_empty: bool, nowait: bool },
    /// `queue.delete-ok`.
    QueueDeleteOk = (50, 41) { message_count: u32 },
    /// `queue.unbind`.
    QueueUnbind = (50, 50) { ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr, arguments: FieldTable },
    /// `queue.unbind-ok`.
    QueueUnbindOk = (50, 51),
/// `basic.qos`.
    BasicQos = (60, 10) { prefetch_size: u32, prefetch_count: u16, global: bool },
    /// `basic.qos-ok`.
    BasicQosOk = (60, 11),
    /// `basic.consume`.
    BasicConsume = (60, 20) { ticket: u16, queue: ShortStr, consumer_tag: ShortStr, no_local: bool, no_ack: bool, exclusive: bool, nowait: bool, arguments: FieldTable },
    /// `basic.consume-ok`.
    BasicConsumeOk = (60, 21) { consumer_tag: ShortStr },
    /// `basic.cancel`.
    BasicCancel = (60, 30) { consumer_tag: ShortStr, nowait: bool },
    /// `basic.cancel-ok`.
    BasicCancelOk = (60, 31) { consumer_tag: ShortStr },
    /// `basic.publish`.
    BasicPublish = (60, 40) { ticket: u16, exchange: ShortStr, routing_key: ShortStr, mandatory: bool, immediate: bool },
    /// `basic.return`.
    BasicReturn = (60, 50) { reply_code: u16, reply_text: ShortStr, exchange: ShortStr, routing_key: ShortStr },
    /// `basic.deliver`.
    BasicDeliver = (60, 60) { consumer_tag: ShortStr, delivery_tag: u64, redelivered: bool, exchange: ShortStr, routing_key: ShortStr },
    /// `basic.get`.
    BasicGet = (60, 70) { ticket: u16, queue: ShortStr, no_ack: bool },
    /// `basic.get-ok`.
    BasicGetOk = (60, 71) { delivery_tag: u64, redelivered: bool, exchange: ShortStr, routing_key: ShortStr, message_count: u32 },
    /// `basic.get-empty`.
    BasicGetEmpty = (60, 72) { cluster_id: ShortStr },
    /// `basic.ack`.
    BasicAck = (60, 80) { delivery_tag: u64, multiple: bool },
    /// `basic.reject`.
    BasicReject = (60, 90) { delivery_tag: u64, requeue: bool },
    /// `basic.recover-async`.
    BasicRecoverAsync = (60, 100) { requeue: bool },
    /// `basic.recover`.
    BasicRecover = (60, 110) { requeue: bool },
    /// `basic.recover-ok`.
    BasicRecoverOk = (60, 111),
    /// `basic.nack`.
    BasicNack = (60, 120) { delivery_tag: u64, multiple: bool, requeue: bool },
    /// `confirm.select`.
    ConfirmSelect = (85, 10) { nowait: bool },
    /// `confirm.select-ok`.
    ConfirmSelectOk = (85, 11),
    /// `tx.select`.
    TxSelect = (90, 10),
    /// `tx.select-ok`.
    TxSelectOk = (90, 11),
    /// `tx.commit`.
    TxCommit = (90, 20),
    /// `tx.commit-ok`.
    TxCommitOk = (90, 21),
    /// `tx.rollback`.
    TxRollback = (90, 30),
    /// `tx.rollback-ok`.
    TxRollbackOk = (90, 31),
}

impl Method {
    /// Whether the method carries content (header and body frames follow it):
    /// basic.publish, basic.return, basic.deliver and basic.get-ok.
    pub fn has_content(&self) -> bool {
        matches!(
            self,
            Method::BasicPublish { .. }
                | Method::BasicReturn { .. }
                | Method::BasicDeliver { .. }
                | Method::BasicGetOk { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(m: &Method) -> BytesMut {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        out
    }

    #[test]
    fn golden_start_ok_plain() {
        // What pika/lapin send for guest/guest with empty client properties.
        let wire: &[u8] =
            b"\x00\x0a\x00\x0b\x00\x00\x00\x00\x05PLAIN\x00\x00\x00\x0c\x00guest\x00guest\x05en_US";
        let m = Method::decode(Bytes::from_static(wire)).unwrap();
        assert_eq!(
            m,
            Method::ConnectionStartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: "en_US".into(),
            }
        );
        assert_eq!(&enc(&m)[..], wire);
    }

    #[test]
    fn golden_basic_publish() {
        // pika: basic_publish(exchange='', routing_key='hello')
        let wire: &[u8] = b"\x00\x3c\x00\x28\x00\x00\x00\x05hello\x00";
        let m = Method::BasicPublish {
            ticket: 0,
            exchange: "".into(),
            routing_key: "hello".into(),
            mandatory: false,
            immediate: false,
        };
        assert_eq!(&enc(&m)[..], wire);
        assert_eq!(Method::decode(Bytes::from_static(wire)).unwrap(), m);
        assert!(m.has_content());
        assert_eq!(m.name(), "basic.publish");
    }

    #[test]
    fn golden_basic_deliver() {
        let wire: &[u8] =
            b"\x00\x3c\x00\x3c\x05ctag1\x00\x00\x00\x00\x00\x00\x00\x01\x01\x00\x05hello";
        let m = Method::BasicDeliver {
            consumer_tag: "ctag1".into(),
            delivery_tag: 1,
            redelivered: true,
            exchange: "".into(),
            routing_key: "hello".into(),
        };
        assert_eq!(&enc(&m)[..], wire);
        assert_eq!(Method::decode(Bytes::from_static(wire)).unwrap(), m);
    }

    #[test]
    fn bits_pack_into_one_octet() {
        let m = Method::QueueDeclare {
            ticket: 0,
            queue: "q".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: true,
            nowait: false,
            arguments: FieldTable::default(),
        };
        assert_eq!(
            &enc(&m)[..],
            b"\x00\x32\x00\x0a\x00\x00\x01q\x0a\x00\x00\x00\x00"
        );
        assert_eq!(Method::decode(enc(&m).freeze()).unwrap(), m);
        // Bits separated by another field start a new octet.
        let m = Method::BasicNack {
            delivery_tag: 5,
            multiple: true,
            requeue: true,
        };
        assert_eq!(
            &enc(&m)[..],
            b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x05\x03"
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            Method::decode(Bytes::from_static(b"\x00\x0a\x00\x63")),
            Err(DecodeError::UnknownMethod {
                class_id: 10,
                method_id: 99
            })
        );
        assert_eq!(
            Method::decode(Bytes::from_static(b"\x00\x0a")),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            Method::decode(Bytes::from_static(b"\x00\x0a\x00\x33\x00")),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            Method::decode(Bytes::from_static(b"\x00\x3c\x00\x28\x00\x00\x00\x05hel")),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(Method::ConnectionCloseOk.class_id(), 10);
        assert_eq!(Method::ConnectionCloseOk.method_id(), 51);
        assert_eq!(Method::ExchangeUnbindOk.method_id(), 51);
        assert_eq!(Method::ConfirmSelect { nowait: false }.class_id(), 85);
        assert_eq!(Method::TxRollbackOk.name(), "tx.rollback-ok");
        assert_eq!(method_name(60, 120), Some("basic.nack"));
        assert_eq!(method_name(30, 10), None);
    }
}
