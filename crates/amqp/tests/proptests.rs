//! Property tests: codec round trips, decode_frame on arbitrary bytes, and split-point invariance.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tributary_amqp::*;

fn shortstr() -> impl Strategy<Value = ShortStr> {
    prop::collection::vec(any::<u8>(), 0..40).prop_map(|v| ShortStr::from_bytes(Bytes::from(v)))
}

fn longstr() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(FieldValue::Bool),
        any::<i8>().prop_map(FieldValue::I8),
        any::<u8>().prop_map(FieldValue::U8),
        any::<i16>().prop_map(FieldValue::I16),
        any::<u16>().prop_map(FieldValue::U16),
        any::<i32>().prop_map(FieldValue::I32),
        any::<u32>().prop_map(FieldValue::U32),
        any::<i64>().prop_map(FieldValue::I64),
        (-1e6f32..1e6f32).prop_map(FieldValue::F32),
        (-1e12f64..1e12f64).prop_map(FieldValue::F64),
        (any::<u8>(), any::<u32>()).prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
        longstr().prop_map(FieldValue::LongStr),
        any::<u64>().prop_map(FieldValue::Timestamp),
        Just(FieldValue::Void),
        longstr().prop_map(FieldValue::ByteArray),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
            prop::collection::vec((shortstr(), inner), 0..6)
                .prop_map(|v| FieldValue::Table(FieldTable(v))),
        ]
    })
}

fn field_table() -> impl Strategy<Value = FieldTable> {
    prop::collection::vec((shortstr(), field_value()), 0..8).prop_map(FieldTable)
}

fn properties() -> impl Strategy<Value = BasicProperties> {
    (
        (
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
            prop::option::of(field_table()),
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u8>()),
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
        ),
        (
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
            prop::option::of(any::<u64>()),
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
            prop::option::of(shortstr()),
        ),
    )
        .prop_map(
            |((a, b, c, d, e, f, g), (h, i, j, k, l, m, n))| BasicProperties {
                content_type: a,
                content_encoding: b,
                headers: c,
                delivery_mode: d,
                priority: e,
                correlation_id: f,
                reply_to: g,
                expiration: h,
                message_id: i,
                timestamp: j,
                kind: k,
                user_id: l,
                app_id: m,
                cluster_id: n,
            },
        )
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        (
            any::<u16>(),
            shortstr(),
            shortstr(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(ticket, exchange, routing_key, mandatory, immediate)| {
                Method::BasicPublish {
                    ticket,
                    exchange,
                    routing_key,
                    mandatory,
                    immediate,
                }
            }),
        (
            shortstr(),
            any::<u64>(),
            any::<bool>(),
            shortstr(),
            shortstr()
        )
            .prop_map(
                |(consumer_tag, delivery_tag, redelivered, exchange, routing_key)| {
                    Method::BasicDeliver {
                        consumer_tag,
                        delivery_tag,
                        redelivered,
                        exchange,
                        routing_key,
                    }
                }
            ),
        (shortstr(), any::<[bool; 5]>(), field_table()).prop_map(|(queue, b, arguments)| {
            Method::QueueDeclare {
                ticket: 0,
                queue,
                passive: b[0],
                durable: b[1],
                exclusive: b[2],
                auto_delete: b[3],
                nowait: b[4],
                arguments,
            }
        }),
        (shortstr(), shortstr(), any::<[bool; 5]>(), field_table()).prop_map(
            |(exchange, kind, b, arguments)| {
                Method::ExchangeDeclare {
                    ticket: 0,
                    exchange,
                    kind,
                    passive: b[0],
                    durable: b[1],
                    auto_delete: b[2],
                    internal: b[3],
                    nowait: b[4],
                    arguments,
                }
            }
        ),
        (shortstr(), shortstr(), any::<[bool; 4]>(), field_table()).prop_map(
            |(queue, consumer_tag, b, arguments)| {
                Method::BasicConsume {
                    ticket: 0,
                    queue,
                    consumer_tag,
                    no_local: b[0],
                    no_ack: b[1],
                    exclusive: b[2],
                    nowait: b[3],
                    arguments,
                }
            }
        ),
        (field_table(), shortstr(), longstr(), shortstr()).prop_map(
            |(client_properties, mechanism, response, locale)| {
                Method::ConnectionStartOk {
                    client_properties,
                    mechanism,
                    response,
                    locale,
                }
            }
        ),
        (any::<u16>(), shortstr(), any::<u16>(), any::<u16>()).prop_map(
            |(reply_code, reply_text, class_id, method_id)| {
                Method::ChannelClose {
                    reply_code,
                    reply_text,
                    class_id,
                    method_id,
                }
            }
        ),
        (any::<u16>(), any::<u32>(), any::<u16>()).prop_map(
            |(channel_max, frame_max, heartbeat)| {
                Method::ConnectionTuneOk {
                    channel_max,
                    frame_max,
                    heartbeat,
                }
            }
        ),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(delivery_tag, multiple, requeue)| Method::BasicNack {
                delivery_tag,
                multiple,
                requeue
            }
        ),
        (any::<u32>(), any::<u16>(), any::<bool>()).prop_map(
            |(prefetch_size, prefetch_count, global)| {
                Method::BasicQos {
                    prefetch_size,
                    prefetch_count,
                    global,
                }
            }
        ),
        Just(Method::TxCommit),
        Just(Method::ConnectionCloseOk),
        any::<bool>().prop_map(|nowait| Method::ConfirmSelect { nowait }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), method()).prop_map(|(channel, method)| Frame::Method { channel, method }),
        (any::<u16>(), any::<u64>(), properties()).prop_map(|(channel, body_size, properties)| {
            Frame::Header {
                channel,
                class_id: 60,
                body_size,
                properties,
            }
        }),
        (any::<u16>(), longstr()).prop_map(|(channel, payload)| Frame::Body { channel, payload }),
        Just(Frame::Heartbeat { channel: 0 }),
    ]
}

proptest! {
    #[test]
    fn table_roundtrip(t in field_table()) {
        let mut out = BytesMut::new();
        t.encode(&mut out);
        prop_assert_eq!(FieldTable::decode(out.freeze()).unwrap(), t);
    }

    #[test]
    fn properties_roundtrip(p in properties()) {
        let mut out = BytesMut::new();
        p.encode(&mut out);
        prop_assert_eq!(BasicProperties::decode(out.freeze()).unwrap(), p);
    }

    #[test]
    fn method_roundtrip(m in method()) {
        let mut out = BytesMut::new();
        m.encode(&mut out);
        prop_assert_eq!(Method::decode(out.freeze()).unwrap(), m);
    }

    #[test]
    fn decode_frame_never_panics(data in prop::collection::vec(any::<u8>(), 0..512), frame_max in prop_oneof![Just(0u32), Just(4096u32), 0u32..64]) {
        let mut buf = BytesMut::from(&data[..]);
        loop {
            let before = buf.len();
            match decode_frame(&mut buf, frame_max) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.is_fatal() => break,
                Err(_) => {}
            }
            prop_assert!(buf.len() < before);
        }
    }

    #[test]
    fn split_points_do_not_matter(frames in prop::collection::vec(frame(), 1..8), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let mut whole = BytesMut::new();
        for f in &frames {
            f.encode(&mut whole);
        }
        let bytes = whole.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for p in points {
            buf.extend_from_slice(&bytes[at..p]);
            at = p;
            while let Some(f) = decode_frame(&mut buf, 0).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn connection_split_points_do_not_matter(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..9000), 1..4), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let mut stream = fuzzing::handshake_prefix();
        for (i, body) in bodies.iter().enumerate() {
            let m = Method::BasicPublish { ticket: 0, exchange: "".into(), routing_key: format!("k{i}").into(), mandatory: false, immediate: false };
            encode_method(1, &m, &mut stream);
            encode_header(1, 60, body.len() as u64, &BasicProperties::default(), &mut stream);
            encode_body(1, body, 4096, &mut stream);
        }
        let stream = stream.freeze();
        let run = |points: &[usize]| {
            let mut c = Connection::new(ConnectionConfig::default(), Instant::now());
            let mut buf = BytesMut::new();
            let mut at = 0;
            let mut out = Vec::new();
            for &p in points {
                buf.extend_from_slice(&stream[at..p]);
                at = p;
                c.handle_input(&mut buf, Instant::now());
                while let Some(e) = c.poll_event() {
                    match e {
                        Event::Authenticate { .. } => c.accept_auth(),
                        Event::Open { .. } => c.accept_open(),
                        e => out.push(e),
                    }
                }
            }
            (out, c.transmit().clone())
        };
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(stream.len());
        points.sort();
        let (split, split_out) = run(&points);
        let (whole, whole_out) = run(&[stream.len()]);
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(split_out, whole_out);
        prop_assert_eq!(split.len(), 1 + bodies.len());
        for (e, body) in split[1..].iter().zip(&bodies) {
            let Event::Publish { body: got, .. } = e else { panic!("{e:?}") };
            prop_assert_eq!(&got[..], &body[..]);
        }
    }
}
