//! Property tests: encode → decode is the identity for every packet type in every version,
//! arbitrary bytes never panic the decoder, and split points never change what is decoded.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use tributary_mqtt::fuzzing::{decode_all, decode_chunked, packet_target};
use tributary_mqtt::*;

const VBI_MAX: u32 = 268_435_455;

fn string() -> impl Strategy<Value = String> {
    "[^\\x00]{0,10}"
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    option::of(string())
}

fn bin() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/ .$üé€]{1,20}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    let level = prop_oneof![Just("+".to_string()), "[a-z0-9 $.]{0,3}"];
    (option::of("[a-z]{1,4}"), vec(level, 1..5), any::<bool>())
        .prop_map(|(share, levels, hash)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            match share {
                Some(g) => format!("$share/{g}/{f}"),
                None => f,
            }
        })
        .prop_filter("valid filter", |f| topic::validate_topic_filter(f).is_ok())
}

fn user_properties() -> impl Strategy<Value = UserProperties> {
    vec((string(), string()), 0..3)
}

fn codes_for(t: PacketType) -> Vec<ReasonCode> {
    (0..=255u8)
        .map(ReasonCode)
        .filter(|c| c.is_valid_for(t))
        .collect()
}

fn reason(t: PacketType, v: ProtocolVersion) -> BoxedStrategy<ReasonCode> {
    if v.is_v5() {
        select(codes_for(t)).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    }
}

fn auth_pair() -> impl Strategy<Value = (Option<String>, Option<Bytes>)> {
    (opt_string(), option::of(bin())).prop_map(|(m, d)| {
        let d = if m.is_some() { d } else { None };
        (m, d)
    })
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        auth_pair(),
        user_properties(),
    )
        .prop_map(
            |(sei, rm, mps, tam, rri, rpi, (am, ad), up)| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up,
            },
        )
}

/// A payload and a payload format indicator that tells the truth about it.
fn payload_and_format() -> impl Strategy<Value = (Option<bool>, Bytes)> {
    prop_oneof![
        (option::of(Just(false)), bin()),
        (Just(None), bin()),
        ("\\PC{0,10}", Just(())).prop_map(|(s, ())| (Some(true), Bytes::from(s))),
    ]
}

fn will(v: ProtocolVersion) -> impl Strategy<Value = Will> {
    let v5 = v.is_v5();
    (
        topic_name(),
        payload_and_format(),
        0..3u8,
        any::<bool>(),
        (
            option::of(any::<u32>()),
            option::of(any::<u32>()),
            opt_string(),
            option::of(topic_name()),
            option::of(bin()),
            user_properties(),
        ),
    )
        .prop_map(
            move |(topic, (pfi, payload), qos, retain, (wdi, mei, ct, rt, cd, up))| {
                let properties = if v5 {
                    WillProperties {
                        payload_format_indicator: pfi,
                        message_expiry_interval: mei,
                        content_type: ct,
                        response_topic: rt,
                        correlation_data: cd,
                        will_delay_interval: wdi,
                        user_properties: up,
                    }
                } else {
                    WillProperties::default()
                };
                Will {
                    topic: Bytes::from(topic),
                    payload,
                    qos: QoS::from_u8(qos).unwrap(),
                    retain,
                    properties,
                }
            },
        )
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will(v)),
        opt_string(),
        option::of(bin()),
        connect_properties(),
    )
        .prop_map(
            move |(clean, ka, mut id, will, username, password, props)| {
                let empty_ok = match v {
                    ProtocolVersion::V3_1 => false,
                    ProtocolVersion::V3_1_1 => clean,
                    ProtocolVersion::V5 => true,
                };
                if id.is_empty() && !empty_ok {
                    id = "c".into();
                }
                let password = if v.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Connect {
                    protocol_version: v,
                    clean_start: clean,
                    keep_alive: ka,
                    client_id: id,
                    will,
                    username,
                    password,
                    properties: if v.is_v5() { props } else { Default::default() },
                })
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        codes_for(PacketType::ConnAck)
    } else {
        (0..=5).filter_map(ReasonCode::from_connack_v3).collect()
    };
    let props = (
        (
            option::of(any::<u32>()),
            option::of(1..=u16::MAX),
            option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
            option::of(any::<bool>()),
            option::of(1..=u32::MAX),
            opt_string(),
            option::of(any::<u16>()),
            opt_string(),
        ),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
            opt_string(),
            opt_string(),
            auth_pair(),
            user_properties(),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, (am, ad), up))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                    user_properties: up,
                }
            },
        );
    (any::<bool>(), select(codes), props).prop_map(move |(sp, code, props)| {
        Packet::ConnAck(ConnAck {
            session_present: sp && code == ReasonCode::SUCCESS,
            reason_code: code,
            properties: if v.is_v5() { props } else { Default::default() },
        })
    })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let props = (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(topic_name()),
        option::of(bin()),
        vec(1..=VBI_MAX, 0..3),
        opt_string(),
        user_properties(),
    );
    (
        any::<bool>(),
        0..3u8,
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        1..=u16::MAX,
        payload_and_format(),
        props,
    )
        .prop_map(
            move |(dup, qos, retain, topic, alias_only, id, (pfi, payload), props)| {
                let qos = QoS::from_u8(qos).unwrap();
                let (mei, ta, rt, cd, sids, ct, up) = props;
                let properties = if v5 {
                    PublishProperties {
                        payload_format_indicator: pfi,
                        message_expiry_interval: mei,
                        content_type: ct,
                        response_topic: rt,
                        correlation_data: cd,
                        subscription_identifiers: sids,
                        topic_alias: ta,
                        user_properties: up,
                    }
                } else {
                    PublishProperties::default()
                };
                let topic = if v5 && alias_only && properties.topic_alias.is_some() {
                    Bytes::new()
                } else {
                    Bytes::from(topic)
                };
                Packet::Publish(Publish {
                    dup: dup && !(v5 && qos == QoS::AtMostOnce),
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn ack_properties(v: ProtocolVersion) -> BoxedStrategy<AckProperties> {
    if v.is_v5() {
        (opt_string(), user_properties())
            .prop_map(|(rs, up)| AckProperties {
                reason_string: rs,
                user_properties: up,
            })
            .boxed()
    } else {
        Just(AckProperties::default()).boxed()
    }
}

fn pub_ack(v: ProtocolVersion, t: PacketType) -> impl Strategy<Value = Packet> {
    (1..=u16::MAX, reason(t, v), ack_properties(v)).prop_map(move |(id, rc, props)| {
        let a = PubAck {
            packet_id: id,
            reason_code: rc,
            properties: props,
        };
        match t {
            PacketType::PubAck => Packet::PubAck(a),
            PacketType::PubRec => Packet::PubRec(a),
            PacketType::PubRel => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        }
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let sub = (topic_filter(), 0..3u8, any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        move |(filter, qos, nl, rap, rh)| {
            let shared = filter.starts_with("$share/");
            Subscription {
                options: SubscriptionOptions {
                    qos: QoS::from_u8(qos).unwrap(),
                    no_local: v5 && nl && !shared,
                    retain_as_published: v5 && rap,
                    retain_handling: match (v5, rh) {
                        (true, 1) => RetainHandling::SendAtNewSubscribe,
                        (true, 2) => RetainHandling::DoNotSend,
                        _ => RetainHandling::SendAtSubscribe,
                    },
                },
                filter,
            }
        },
    );
    (
        1..=u16::MAX,
        vec(sub, 1..4),
        option::of(1..=VBI_MAX),
        user_properties(),
    )
        .prop_map(move |(id, filters, sid, up)| {
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters,
                properties: if v5 {
                    SubscribeProperties {
                        subscription_identifier: sid,
                        user_properties: up,
                    }
                } else {
                    Default::default()
                },
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() {
        codes_for(PacketType::SubAck)
    } else {
        vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode(0x80),
        ]
    };
    (1..=u16::MAX, vec(select(codes), 1..5), ack_properties(v)).prop_map(|(id, codes, props)| {
        Packet::SubAck(SubAck {
            packet_id: id,
            reason_codes: codes,
            properties: props,
        })
    })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (1..=u16::MAX, vec(topic_filter(), 1..4), user_properties()).prop_map(move |(id, f, up)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: f,
            properties: UnsubscribeProperties {
                user_properties: if v.is_v5() { up } else { vec![] },
            },
        })
    })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let n = if v.is_v5() { 1..4 } else { 0..1 };
    (
        1..=u16::MAX,
        vec(select(codes_for(PacketType::UnsubAck)), n),
        ack_properties(v),
    )
        .prop_map(|(id, codes, props)| {
            Packet::UnsubAck(UnsubAck {
                packet_id: id,
                reason_codes: codes,
                properties: props,
            })
        })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        reason(PacketType::Disconnect, v),
        option::of(any::<u32>()),
        opt_string(),
        opt_string(),
        user_properties(),
    )
        .prop_map(move |(rc, sei, rs, sr, up)| {
            Packet::Disconnect(Disconnect {
                reason_code: rc,
                properties: if v5 {
                    DisconnectProperties {
                        session_expiry_interval: sei,
                        reason_string: rs,
                        server_reference: sr,
                        user_properties: up,
                    }
                } else {
                    Default::default()
                },
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason(PacketType::Auth, ProtocolVersion::V5),
        auth_pair(),
        opt_string(),
        user_properties(),
    )
        .prop_map(|(rc, (am, ad), rs, up)| {
            Packet::Auth(Auth {
                reason_code: rc,
                properties: AuthProperties {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                },
            })
        })
}

/// Any packet but CONNECT, valid in `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut s = vec![
        connack(v).boxed(),
        publish(v).boxed(),
        pub_ack(v, PacketType::PubAck).boxed(),
        pub_ack(v, PacketType::PubRec).boxed(),
        pub_ack(v, PacketType::PubRel).boxed(),
        pub_ack(v, PacketType::PubComp).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        s.push(auth().boxed());
    }
    proptest::strategy::Union::new(s).boxed()
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ])
}

/// A CONNECT followed by packets, the way a connection's bytes look.
fn session() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(|v| {
        (connect(v), vec(packet(v), 0..6)).prop_map(move |(c, rest)| {
            let mut all = vec![c];
            all.extend(rest);
            (v, all)
        })
    })
}

fn encode_all(v: ProtocolVersion, packets: &[Packet]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in packets {
        encode(p, v, &mut out).unwrap();
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn connect_round_trips(p in version().prop_flat_map(connect)) {
        let Packet::Connect(c) = &p else { unreachable!() };
        let mut buf = BytesMut::new();
        encode(&p, c.protocol_version, &mut buf).unwrap();
        let got = decode(&mut buf, None, MAX_PACKET_SIZE).unwrap();
        prop_assert_eq!(got, Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn packets_round_trip((v, p) in version().prop_flat_map(|v| (Just(v), packet(v)))) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        let len = buf.len();
        let got = decode(&mut buf, Some(v), MAX_PACKET_SIZE).unwrap();
        prop_assert_eq!(got, Some(p.clone()));
        prop_assert!(buf.is_empty());
        // One octet under the exact size is refused as too large.
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        prop_assert!(
            matches!(decode(&mut buf, Some(v), len as u32 - 1), Err(DecodeError::PacketTooLarge { .. })),
            "not refused at {}", len - 1
        );
    }

    #[test]
    fn sessions_decode_the_same_at_any_split((v, packets) in session(), chunk in 1usize..40) {
        let bytes = encode_all(v, &packets);
        prop_assert_eq!(decode_all(&bytes, None, MAX_PACKET_SIZE), (packets.clone(), None));
        prop_assert_eq!(decode_chunked(&bytes, None, MAX_PACKET_SIZE, chunk), (packets, None));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..300)) {
        packet_target(&data);
    }

    #[test]
    fn mutated_sessions_never_panic((v, packets) in session(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), octet in any::<u8>()) {
        let mut bytes = encode_all(v, &packets).to_vec();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        let mut input = vec![octet & !0x03];
        input.extend_from_slice(&bytes);
        packet_target(&input);
    }
}
