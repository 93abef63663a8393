//! Golden bytes (paho-mqtt 2.2 captures and hand-built packets) and one rejection test per
//! decoder rule, with its reason code.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::reason::ReasonCode as RC;
use crate::topic::TopicError;
use crate::wire::put_field;
use crate::*;

const V31: Option<ProtocolVersion> = Some(ProtocolVersion::V3_1);
const V311: Option<ProtocolVersion> = Some(ProtocolVersion::V3_1_1);
const V5: Option<ProtocolVersion> = Some(ProtocolVersion::V5);

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A packet: the first octet, a minimal remaining length, the body.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(first);
    put_var_int(&mut out, body.len());
    out.put_slice(body);
    out.to_vec()
}

fn decode_one(version: Option<ProtocolVersion>, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, MAX_PACKET_SIZE)?.expect("a whole packet");
    assert!(buf.is_empty(), "{} octets left", buf.len());
    Ok(p)
}

fn err(version: Option<ProtocolVersion>, bytes: &[u8]) -> DecodeError {
    decode_one(version, bytes).expect_err("must be refused")
}

fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).unwrap();
    out.to_vec()
}

fn decode_stream(mut version: Option<ProtocolVersion>, bytes: &[u8]) -> Vec<Packet> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = decode(&mut buf, version, MAX_PACKET_SIZE).unwrap() {
        if let Packet::Connect(c) = &p {
            version = Some(c.protocol_version);
        }
        out.push(p);
    }
    assert!(buf.is_empty());
    out
}

// --- golden: paho-mqtt 2.2 (Python) on the wire -------------------------------------------

const PAHO_V311: &str = "101500044d5154540402003c00097061686f2d74657374 \
    3214000c73656e736f72732f74656d70000132312e35 \
    821000020005612f2b2f63010003622f2302";

#[test]
fn golden_paho_v311() {
    let bytes = hex(PAHO_V311);
    let packets = decode_stream(None, &bytes);
    let connect = Connect {
        protocol_version: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        client_id: "paho-test".into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    };
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        topic: Bytes::from_static(b"sensors/temp"),
        packet_id: Some(1),
        payload: Bytes::from_static(b"21.5"),
        ..Default::default()
    };
    let sub = |filter: &str, qos| Subscription {
        filter: filter.into(),
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
    };
    let subscribe = Subscribe {
        packet_id: 2,
        filters: vec![sub("a/+/c", QoS::AtLeastOnce), sub("b/#", QoS::ExactlyOnce)],
        properties: SubscribeProperties::default(),
    };
    assert_eq!(
        packets,
        vec![
            Packet::Connect(connect),
            Packet::Publish(publish),
            Packet::Subscribe(subscribe)
        ]
    );
    let again: Vec<u8> = packets
        .iter()
        .flat_map(|p| enc(p, ProtocolVersion::V3_1_1))
        .collect();
    assert_eq!(again, bytes);
}

const PAHO_V5: &str = "101600044d5154540502003c0000097061686f2d74657374 \
    3247000c73656e736f72732f74656d7000013202000000 3c03000a746578742f706c61696e08000a7265706c792f \
    6865726509000201022600016b0001762600016b00017732312e35 \
    820d0002020b070005612f2b2f632d";

#[test]
fn golden_paho_v5() {
    let bytes = hex(PAHO_V5);
    let packets = decode_stream(None, &bytes);
    let Packet::Connect(c) = &packets[0] else {
        panic!("{packets:?}")
    };
    assert_eq!(c.protocol_version, ProtocolVersion::V5);
    assert!(c.properties.is_empty());
    let Packet::Publish(p) = &packets[1] else {
        panic!()
    };
    assert_eq!(p.topic_str(), Some("sensors/temp"));
    assert_eq!(p.packet_id, Some(1));
    assert_eq!(&p.payload[..], b"21.5");
    assert_eq!(
        p.properties,
        PublishProperties {
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(&[1, 2])),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Default::default()
        }
    );
    let Packet::Subscribe(s) = &packets[2] else {
        panic!()
    };
    assert_eq!(s.properties.subscription_identifier, Some(7));
    assert_eq!(
        s.filters,
        vec![Subscription {
            filter: "a/+/c".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }]
    );
    let again: Vec<u8> = packets
        .iter()
        .flat_map(|p| enc(p, ProtocolVersion::V5))
        .collect();
    assert_eq!(again, bytes);
}

#[test]
fn golden_paho_v31_connect() {
    let bytes = hex("101700064d51497364700302003c00097061686f2d74657374");
    let p = decode_one(None, &bytes).unwrap();
    let Packet::Connect(c) = &p else { panic!() };
    assert_eq!(c.protocol_version, ProtocolVersion::V3_1);
    assert_eq!(c.client_id, "paho-test");
    assert_eq!(enc(&p, ProtocolVersion::V3_1), bytes);
    assert_eq!(peek_connect_version(&bytes), Some(ProtocolVersion::V3_1));
    assert_eq!(peek_connect_version(&bytes[..10]), None);
    assert_eq!(
        peek_connect_version(&bytes[..11]),
        Some(ProtocolVersion::V3_1)
    );
}

// --- golden: hand-built from the spec's field layouts ----------------------------------------

#[test]
fn golden_connect_v5_with_will_and_credentials() {
    let c = Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(Will {
            topic: Bytes::from_static(b"w"),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                ..Default::default()
            },
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            ..Default::default()
        },
    };
    let expected = hex("10 28 0004 4d515454 05 ec 000a \
         08 11 00000e10 21 0014 \
         0001 63 \
         05 18 00000005 0001 77 0001 78 \
         0001 75 0001 70");
    let p = Packet::Connect(c);
    assert_eq!(enc(&p, ProtocolVersion::V5), expected);
    assert_eq!(decode_one(None, &expected).unwrap(), p);
}

#[test]
fn golden_connack() {
    let v5 = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: RC::SUCCESS,
        properties: ConnAckProperties {
            assigned_client_identifier: Some("id".into()),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            ..Default::default()
        },
    });
    let bytes = hex("20 0c 01 00 09 12 0002 6964 24 01 25 00");
    assert_eq!(enc(&v5, ProtocolVersion::V5), bytes);
    assert_eq!(decode_one(V5, &bytes).unwrap(), v5);

    // 3.x: the reason travels as a return code.
    let refused = Packet::ConnAck(ConnAck {
        reason_code: RC::BAD_USER_NAME_OR_PASSWORD,
        ..Default::default()
    });
    assert_eq!(enc(&refused, ProtocolVersion::V3_1_1), hex("20 02 00 04"));
    assert_eq!(decode_one(V311, &hex("20 02 00 04")).unwrap(), refused);
    let banned = Packet::ConnAck(ConnAck {
        reason_code: RC::BANNED,
        ..Default::default()
    });
    assert_eq!(enc(&banned, ProtocolVersion::V3_1_1), hex("20 02 00 05"));
}

#[test]
fn golden_acks_short_forms() {
    let ack = |reason_code, reason: Option<&str>| PubAck {
        packet_id: 0x1234,
        reason_code,
        properties: AckProperties {
            reason_string: reason.map(Into::into),
            ..Default::default()
        },
    };
    let cases = [
        (Packet::PubAck(ack(RC::SUCCESS, None)), "40 02 1234"),
        (
            Packet::PubRec(ack(RC::NO_MATCHING_SUBSCRIBERS, None)),
            "50 03 1234 10",
        ),
        (
            Packet::PubRel(ack(RC::PACKET_IDENTIFIER_NOT_FOUND, Some("x"))),
            "62 08 1234 92 04 1f 0001 78",
        ),
        (Packet::PubComp(ack(RC::SUCCESS, None)), "70 02 1234"),
    ];
    for (p, h) in cases {
        assert_eq!(enc(&p, ProtocolVersion::V5), hex(h), "{p:?}");
        assert_eq!(decode_one(V5, &hex(h)).unwrap(), p);
    }
    // A v5 ack with an explicit empty property block decodes to the same packet.
    assert_eq!(
        decode_one(V5, &hex("40 04 1234 00 00")).unwrap(),
        Packet::PubAck(ack(RC::SUCCESS, None))
    );
    // 3.x drops the reason.
    let p = Packet::PubRec(ack(RC::NO_MATCHING_SUBSCRIBERS, Some("x")));
    assert_eq!(enc(&p, ProtocolVersion::V3_1_1), hex("50 02 1234"));
}

#[test]
fn golden_suback_unsuback_disconnect_auth_ping() {
    let suback = Packet::SubAck(SubAck {
        packet_id: 1,
        reason_codes: vec![RC::GRANTED_QOS_2, RC::NOT_AUTHORIZED],
        properties: AckProperties::default(),
    });
    assert_eq!(
        enc(&suback, ProtocolVersion::V5),
        hex("90 05 0001 00 02 87")
    );
    // 3.1.1 knows only 0x80 for a failure.
    assert_eq!(
        enc(&suback, ProtocolVersion::V3_1_1),
        hex("90 04 0001 02 80")
    );

    let unsuback = Packet::UnsubAck(UnsubAck {
        packet_id: 1,
        reason_codes: vec![RC::NO_SUBSCRIPTION_EXISTED],
        properties: AckProperties::default(),
    });
    assert_eq!(enc(&unsuback, ProtocolVersion::V5), hex("b0 04 0001 00 11"));
    assert_eq!(enc(&unsuback, ProtocolVersion::V3_1_1), hex("b0 02 0001"));

    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: 9,
        filters: vec!["a/#".into()],
        properties: UnsubscribeProperties::default(),
    });
    assert_eq!(
        enc(&unsubscribe, ProtocolVersion::V3_1_1),
        hex("a2 07 0009 0003 612f23")
    );

    let normal = Packet::Disconnect(Disconnect::default());
    assert_eq!(enc(&normal, ProtocolVersion::V5), hex("e0 00"));
    assert_eq!(enc(&normal, ProtocolVersion::V3_1_1), hex("e0 00"));
    let taken = Packet::Disconnect(Disconnect {
        reason_code: RC::SESSION_TAKEN_OVER,
        properties: DisconnectProperties::default(),
    });
    assert_eq!(enc(&taken, ProtocolVersion::V5), hex("e0 01 8e"));
    assert_eq!(decode_one(V5, &hex("e0 01 8e")).unwrap(), taken);
    assert_eq!(decode_one(V5, &hex("e0 02 8e 00")).unwrap(), taken);

    assert_eq!(
        enc(&Packet::Auth(Auth::default()), ProtocolVersion::V5),
        hex("f0 00")
    );
    assert_eq!(enc(&Packet::PingReq, ProtocolVersion::V3_1), hex("c0 00"));
    assert_eq!(enc(&Packet::PingResp, ProtocolVersion::V5), hex("d0 00"));
    assert_eq!(
        encode(
            &Packet::Auth(Auth::default()),
            ProtocolVersion::V3_1_1,
            &mut BytesMut::new()
        ),
        Err(EncodeError::NotInVersion {
            packet: PacketType::Auth,
            version: ProtocolVersion::V3_1_1
        })
    );
}

#[test]
fn publish_payload_is_zero_copy() {
    let bytes = pkt(0x30, &hex("0001 61 68656c6c6f"));
    let mut buf = BytesMut::from(&bytes[..]);
    let base = buf.as_ptr() as usize;
    let Some(Packet::Publish(p)) = decode(&mut buf, V311, MAX_PACKET_SIZE).unwrap() else {
        panic!()
    };
    assert_eq!(&p.payload[..], b"hello");
    assert_eq!(p.payload.as_ptr() as usize, base + 5);
    assert_eq!(p.topic.as_ptr() as usize, base + 4);
}

// --- limits and incremental input ------------------------------------------------------------

#[test]
fn too_large_is_refused_before_the_body() {
    // Mosquitto's 256 MiB prefix: refused with only five octets in, nothing reserved.
    let mut buf = BytesMut::from(&hex("30 ffffff7f")[..]);
    let cap = buf.capacity();
    let e = decode(&mut buf, V311, 1 << 20).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1 << 20
        }
    );
    assert_eq!(e.reason_code(), RC::PACKET_TOO_LARGE);
    assert_eq!(buf.capacity(), cap);
    // Even as the first packet.
    assert!(matches!(
        decode(&mut BytesMut::from(&hex("10 ffffff7f")[..]), None, 1 << 20),
        Err(DecodeError::PacketTooLarge { .. })
    ));
    // The limit counts the fixed header: 2 + 3 = 5.
    let p = pkt(0x30, &hex("0001 61"));
    assert!(
        decode(&mut BytesMut::from(&p[..]), V311, 5)
            .unwrap()
            .is_some()
    );
    assert!(decode(&mut BytesMut::from(&p[..]), V311, 4).is_err());
}

#[test]
fn incomplete_input_waits_and_consumes_nothing() {
    let bytes = hex(PAHO_V311);
    for cut in 0..21 + 2 {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(decode(&mut buf, None, MAX_PACKET_SIZE), Ok(None), "{cut}");
        assert_eq!(buf.len(), cut);
    }
    // The room for the rest of an announced, allowed packet is reserved.
    let mut buf = BytesMut::from(&hex("30 e807")[..]);
    assert_eq!(decode(&mut buf, V311, MAX_PACKET_SIZE), Ok(None));
    assert!(buf.capacity() >= 1003);
}

#[test]
fn non_minimal_remaining_length_is_accepted() {
    assert_eq!(decode_one(V311, &hex("c0 8000")), Ok(Packet::PingReq));
}

// --- every rule, with its reason code ---------------------------------------------------------

#[track_caller]
fn refused(version: Option<ProtocolVersion>, bytes: &[u8], e: DecodeError, rc: RC) {
    let got = err(version, bytes);
    assert_eq!(got, e);
    assert_eq!(got.reason_code(), rc, "{got}");
}

#[test]
fn rejects_bad_fixed_headers() {
    refused(
        V311,
        &hex("00 00"),
        DecodeError::ReservedPacketType(0),
        RC::MALFORMED_PACKET,
    );
    refused(
        V311,
        &hex("f0 00"),
        DecodeError::ReservedPacketType(15),
        RC::MALFORMED_PACKET,
    );
    for (first, packet) in [
        (0x60, PacketType::PubRel),
        (0x80, PacketType::Subscribe),
        (0xa3, PacketType::Unsubscribe),
        (0x41, PacketType::PubAck),
        (0xc8, PacketType::PingReq),
        (0xe2, PacketType::Disconnect),
    ] {
        // Refused on the first octet alone.
        let e = decode(&mut BytesMut::from(&[first][..]), V5, MAX_PACKET_SIZE).unwrap_err();
        assert_eq!(
            e,
            DecodeError::InvalidFlags {
                packet,
                flags: first & 0x0f
            }
        );
        assert_eq!(e.reason_code(), RC::MALFORMED_PACKET);
    }
    // MQTT 3.1 retransmissions carry DUP.
    assert!(decode_one(V31, &hex("6a 02 0001")).is_ok());
    assert!(
        err(V311, &hex("6a 02 0001"))
            == DecodeError::InvalidFlags {
                packet: PacketType::PubRel,
                flags: 0x0a
            }
    );
    refused(
        V311,
        &hex("36 05 0001 61 0001"),
        DecodeError::InvalidQoS,
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &hex("38 04 0001 61 00"),
        DecodeError::DupWithQoS0,
        RC::MALFORMED_PACKET,
    );
    assert!(decode_one(V311, &hex("38 03 0001 61")).is_ok());
    refused(
        V311,
        &hex("30 ffffffff01"),
        DecodeError::MalformedVarInt,
        RC::MALFORMED_PACKET,
    );
}

#[test]
fn rejects_out_of_order_connect() {
    refused(
        None,
        &hex("c0 00"),
        DecodeError::ExpectedConnect(PacketType::PingReq),
        RC::PROTOCOL_ERROR,
    );
    let connect = hex(PAHO_V311);
    let connect = &connect[..23];
    refused(
        V311,
        connect,
        DecodeError::UnexpectedConnect,
        RC::PROTOCOL_ERROR,
    );
}

#[test]
fn rejects_bad_connects() {
    let connect = |name: &str, level: u8, flags: u8, payload: &str| {
        let mut body = BytesMut::new();
        put_field(&mut body, name.as_bytes());
        body.put_u8(level);
        body.put_u8(flags);
        body.put_u16(60);
        if level == 5 {
            body.put_u8(0);
        }
        body.put_slice(&hex(payload));
        pkt(0x10, &body)
    };
    assert!(decode_one(None, &connect("MQTT", 4, 0x02, "0001 63")).is_ok());

    let e = err(None, &connect("MQTX", 4, 0x02, "0001 63"));
    assert_eq!(e, DecodeError::InvalidProtocolName);
    assert_eq!(
        (e.reason_code(), e.connack_v3()),
        (RC::UNSUPPORTED_PROTOCOL_VERSION, None)
    );
    for (name, level) in [("MQTT", 6), ("MQTT", 3), ("MQIsdp", 4), ("MQTT", 0x84)] {
        let bytes = connect(name, level, 0x02, "0001 63");
        let e = err(None, &bytes);
        assert_eq!(e, DecodeError::UnsupportedProtocolVersion(level));
        assert_eq!(e.reason_code(), RC::UNSUPPORTED_PROTOCOL_VERSION);
        assert_eq!(e.connack_v3(), Some(0x01));
        assert_eq!(peek_connect_version(&bytes), None);
    }
    for flags in [0x03, 0x0a, 0x22, 0x1c] {
        // reserved bit; will QoS without will; will retain without will; will QoS 3
        refused(
            None,
            &connect("MQTT", 4, flags, "0001 63 0001 77 0000"),
            DecodeError::InvalidConnectFlags(flags),
            RC::MALFORMED_PACKET,
        );
    }
    refused(
        None,
        &connect("MQTT", 4, 0x42, "0001 63 0001 70"),
        DecodeError::PasswordWithoutUsername,
        RC::MALFORMED_PACKET,
    );
    // MQTT 5 allows a password alone.
    assert!(decode_one(None, &connect("MQTT", 5, 0x42, "0001 63 0001 70")).is_ok());

    // Empty client identifiers.
    let e = err(None, &connect("MQTT", 4, 0x00, "0000"));
    assert_eq!(e, DecodeError::ClientIdRejected);
    assert_eq!(
        (e.reason_code(), e.connack_v3()),
        (RC::CLIENT_IDENTIFIER_NOT_VALID, Some(0x02))
    );
    assert!(decode_one(None, &connect("MQTT", 4, 0x02, "0000")).is_ok());
    assert_eq!(
        err(None, &connect("MQIsdp", 3, 0x02, "0000")),
        DecodeError::ClientIdRejected
    );
    assert!(decode_one(None, &connect("MQTT", 5, 0x00, "0000")).is_ok());

    // Will topic rules and a payload that lies about its format.
    refused(
        None,
        &connect("MQTT", 4, 0x06, "0001 63 0003 612f23 0000"),
        DecodeError::InvalidTopicName(TopicError::WildcardInName),
        RC::TOPIC_NAME_INVALID,
    );
    let mut will_v5 = connect("MQTT", 5, 0x06, "0001 63 02 0101 0001 77 0001 ff");
    refused(
        None,
        &will_v5,
        DecodeError::PayloadFormatInvalid,
        RC::PAYLOAD_FORMAT_INVALID,
    );
    will_v5 = connect("MQTT", 5, 0x06, "0001 63 02 0101 0001 77 0001 41");
    assert!(decode_one(None, &will_v5).is_ok());

    // Lengths: one octet too many, one too few.
    refused(
        None,
        &connect("MQTT", 4, 0x02, "0001 63 00"),
        DecodeError::TrailingBytes {
            packet: PacketType::Connect,
            count: 1,
        },
        RC::MALFORMED_PACKET,
    );
    refused(
        None,
        &connect("MQTT", 4, 0x02, "0002 63"),
        DecodeError::Truncated(PacketType::Connect),
        RC::MALFORMED_PACKET,
    );
    // Authentication Data needs a method.
    let mut body = BytesMut::new();
    put_field(&mut body, b"MQTT");
    body.put_slice(&hex("05 02 003c 04 16 0001 41 0001 63"));
    refused(
        None,
        &pkt(0x10, &body),
        DecodeError::AuthDataWithoutMethod,
        RC::PROTOCOL_ERROR,
    );
}

#[test]
fn rejects_bad_strings() {
    for topic in ["0002 61ff", "0002 6100", "0003 eda080", "0002 c0af"] {
        refused(
            V311,
            &pkt(0x30, &hex(topic)),
            DecodeError::InvalidUtf8(PacketType::Publish),
            RC::MALFORMED_PACKET,
        );
    }
    refused(
        V311,
        &pkt(0x82, &hex("0001 0002 ff61 00")),
        DecodeError::InvalidUtf8(PacketType::Subscribe),
        RC::MALFORMED_PACKET,
    );
}

#[test]
fn rejects_bad_publish() {
    refused(
        V311,
        &pkt(0x32, &hex("0001 61 0000")),
        DecodeError::ZeroPacketId(PacketType::Publish),
        RC::PROTOCOL_ERROR,
    );
    for topic in ["0003 612f2b", "0001 23", "0003 61232f"] {
        refused(
            V5,
            &pkt(0x30, &hex(&format!("{topic} 00"))),
            DecodeError::InvalidTopicName(TopicError::WildcardInName),
            RC::TOPIC_NAME_INVALID,
        );
    }
    refused(
        V311,
        &pkt(0x30, &hex("0000 41")),
        DecodeError::InvalidTopicName(TopicError::Empty),
        RC::TOPIC_NAME_INVALID,
    );
    refused(
        V5,
        &pkt(0x30, &hex("0000 00 41")),
        DecodeError::EmptyTopicWithoutAlias,
        RC::PROTOCOL_ERROR,
    );
    assert!(decode_one(V5, &pkt(0x30, &hex("0000 03 230001 41"))).is_ok());
    refused(
        V5,
        &pkt(0x30, &hex("0000 03 230000 41")),
        DecodeError::TopicAliasZero,
        RC::TOPIC_ALIAS_INVALID,
    );
    refused(
        V5,
        &pkt(0x30, &hex("0001 61 02 0101 ff")),
        DecodeError::PayloadFormatInvalid,
        RC::PAYLOAD_FORMAT_INVALID,
    );
    assert!(decode_one(V5, &pkt(0x30, &hex("0001 61 02 0100 ff"))).is_ok());
}

#[test]
fn rejects_bad_properties() {
    let publish = |props: &str| {
        let p = hex(props);
        let mut body = hex("0001 61");
        body.push(p.len() as u8);
        body.extend_from_slice(&p);
        pkt(0x30, &body)
    };
    // Not a PUBLISH property, and not a property at all.
    refused(
        V5,
        &publish("11 00000001"),
        DecodeError::UnexpectedProperty {
            packet: PacketType::Publish,
            id: 0x11,
        },
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &publish("7f 00"),
        DecodeError::UnexpectedProperty {
            packet: PacketType::Publish,
            id: 0x7f,
        },
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &publish("02 00000001 02 00000002"),
        DecodeError::DuplicateProperty(0x02),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V5,
        &publish("01 02"),
        DecodeError::InvalidPropertyValue(0x01),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V5,
        &publish("0b 00"),
        DecodeError::InvalidPropertyValue(0x0b),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V5,
        &publish("08 0003 612f23"),
        DecodeError::InvalidPropertyValue(0x08),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V5,
        &publish("0b ffffffff01"),
        DecodeError::MalformedVarInt,
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &publish("03 0005 61"),
        DecodeError::Truncated(PacketType::Publish),
        RC::MALFORMED_PACKET,
    );
    // User Property and Subscription Identifier may repeat in a PUBLISH.
    let Packet::Publish(p) = decode_one(
        V5,
        &publish("0b 01 0b 8002 26 0001 6b 0001 76 26 0001 6b 0001 76"),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 256]);
    assert_eq!(p.properties.user_properties.len(), 2);
    // ... but the Subscription Identifier only once in a SUBSCRIBE.
    refused(
        V5,
        &pkt(0x82, &hex("0001 04 0b01 0b02 0001 61 00")),
        DecodeError::DuplicateProperty(0x0b),
        RC::PROTOCOL_ERROR,
    );
    // A property block longer than the packet.
    refused(
        V5,
        &pkt(0x30, &hex("0001 61 09 01")),
        DecodeError::Truncated(PacketType::Publish),
        RC::MALFORMED_PACKET,
    );
    // CONNACK values.
    for (props, id) in [
        ("21 0000", 0x21),
        ("27 00000000", 0x27),
        ("24 02", 0x24),
        ("25 05", 0x25),
    ] {
        let p = hex(props);
        let mut body = hex("00 00");
        body.push(p.len() as u8);
        body.extend_from_slice(&p);
        refused(
            V5,
            &pkt(0x20, &body),
            DecodeError::InvalidPropertyValue(id),
            RC::PROTOCOL_ERROR,
        );
    }
}

#[test]
fn rejects_bad_subscribe_and_unsubscribe() {
    refused(
        V311,
        &pkt(0x82, &hex("0000 0001 61 00")),
        DecodeError::ZeroPacketId(PacketType::Subscribe),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &pkt(0x82, &hex("0001")),
        DecodeError::NoTopicFilters(PacketType::Subscribe),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V5,
        &pkt(0x82, &hex("0001 00")),
        DecodeError::NoTopicFilters(PacketType::Subscribe),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &pkt(0xa2, &hex("0001")),
        DecodeError::NoTopicFilters(PacketType::Unsubscribe),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &pkt(0x82, &hex("0001 0000 00")),
        DecodeError::InvalidTopicFilter(TopicError::Empty),
        RC::TOPIC_FILTER_INVALID,
    );
    refused(
        V311,
        &pkt(0xa2, &hex("0001 0005 612f232f62")),
        DecodeError::InvalidTopicFilter(TopicError::MultiLevelWildcard),
        RC::TOPIC_FILTER_INVALID,
    );
    refused(
        V311,
        &pkt(0x82, &hex("0001 0002 612b 00")),
        DecodeError::InvalidTopicFilter(TopicError::SingleLevelWildcard),
        RC::TOPIC_FILTER_INVALID,
    );
    // Subscription options: 3.x has six reserved bits, 5.0 two; QoS 3; Retain Handling 3.
    refused(
        V311,
        &pkt(0x82, &hex("0001 0001 61 04")),
        DecodeError::InvalidSubscriptionOptions(0x04),
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &pkt(0x82, &hex("0001 00 0001 61 40")),
        DecodeError::InvalidSubscriptionOptions(0x40),
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &pkt(0x82, &hex("0001 00 0001 61 03")),
        DecodeError::InvalidQoS,
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &pkt(0x82, &hex("0001 00 0001 61 30")),
        DecodeError::InvalidRetainHandling,
        RC::PROTOCOL_ERROR,
    );
    let mut body = hex("0001 00");
    put_field_vec(&mut body, b"$share/g/a");
    body.push(0x04);
    refused(
        V5,
        &pkt(0x82, &body),
        DecodeError::NoLocalOnSharedSubscription,
        RC::PROTOCOL_ERROR,
    );
    let mut body = hex("0001");
    put_field_vec(&mut body, b"$share/g");
    body.push(0x00);
    refused(
        V311,
        &pkt(0x82, &body),
        DecodeError::InvalidTopicFilter(TopicError::InvalidShare),
        RC::TOPIC_FILTER_INVALID,
    );
}

fn put_field_vec(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
}

#[test]
fn rejects_bad_acks_and_lengths() {
    refused(
        V311,
        &hex("40 02 0000"),
        DecodeError::ZeroPacketId(PacketType::PubAck),
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &hex("40 03 0001 00"),
        DecodeError::TrailingBytes {
            packet: PacketType::PubAck,
            count: 1,
        },
        RC::MALFORMED_PACKET,
    );
    refused(
        V311,
        &hex("40 01 00"),
        DecodeError::Truncated(PacketType::PubAck),
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &hex("c0 01 00"),
        DecodeError::TrailingBytes {
            packet: PacketType::PingReq,
            count: 1,
        },
        RC::MALFORMED_PACKET,
    );
    refused(
        V311,
        &hex("e0 01 00"),
        DecodeError::TrailingBytes {
            packet: PacketType::Disconnect,
            count: 1,
        },
        RC::MALFORMED_PACKET,
    );
    // Reason codes the spec does not allow in the packet.
    for (bytes, packet, code) in [
        ("40 03 0001 92", PacketType::PubAck, 0x92),
        ("62 03 0001 10", PacketType::PubRel, 0x10),
        ("e0 01 18", PacketType::Disconnect, 0x18),
        ("f0 02 8e 00", PacketType::Auth, 0x8e),
        ("90 04 0001 00 03", PacketType::SubAck, 0x03),
        ("b0 04 0001 00 01", PacketType::UnsubAck, 0x01),
        ("20 03 00 04 00", PacketType::ConnAck, 0x04),
    ] {
        refused(
            V5,
            &hex(bytes),
            DecodeError::InvalidReasonCode { packet, code },
            RC::PROTOCOL_ERROR,
        );
    }
    refused(
        V311,
        &hex("20 02 00 06"),
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 6,
        },
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &hex("90 03 0001 03"),
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 3,
        },
        RC::PROTOCOL_ERROR,
    );
    refused(
        V311,
        &hex("20 02 02 00"),
        DecodeError::InvalidConnAckFlags(0x02),
        RC::MALFORMED_PACKET,
    );
    refused(
        V311,
        &hex("20 02 01 05"),
        DecodeError::InvalidConnAckFlags(0x01),
        RC::MALFORMED_PACKET,
    );
    refused(
        V5,
        &pkt(0xf0, &hex("18 04 16 0001 41")),
        DecodeError::AuthDataWithoutMethod,
        RC::PROTOCOL_ERROR,
    );
}

#[test]
fn encode_errors_write_nothing() {
    let mut out = BytesMut::new();
    let p = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: Bytes::from_static(b"a"),
        ..Default::default()
    });
    assert_eq!(
        encode(&p, ProtocolVersion::V5, &mut out),
        Err(EncodeError::PacketIdMismatch)
    );
    let p = Packet::Publish(Publish {
        topic: Bytes::from(vec![b'a'; 70_000]),
        ..Default::default()
    });
    assert_eq!(
        encode(&p, ProtocolVersion::V5, &mut out),
        Err(EncodeError::FieldTooLong(70_000))
    );
    let p = Packet::Publish(Publish {
        topic: Bytes::from_static(b"a"),
        payload: Bytes::from(vec![0; VBI_MAX as usize]),
        ..Default::default()
    });
    assert!(matches!(
        encode(&p, ProtocolVersion::V3_1_1, &mut out),
        Err(EncodeError::PacketTooLarge(_))
    ));
    assert!(out.is_empty());
}
