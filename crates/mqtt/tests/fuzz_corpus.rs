//! Replays every committed fuzz input (fuzz/corpus/mqtt_packet and fuzz/regressions/mqtt_packet)
//! through the same harness as the cargo-fuzz target, on stable Rust.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tributary_mqtt::fuzzing::packet_target;
use tributary_mqtt::*;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(rd) = fs::read_dir(fuzz_dir().join(kind).join(target)) {
            out.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    out
}

#[test]
fn replay_mqtt_packet() {
    let files = files("mqtt_packet");
    assert!(!files.is_empty(), "no mqtt_packet corpus");
    for f in files {
        packet_target(&fs::read(&f).unwrap());
    }
}

#[test]
fn seeds_pass_the_harness() {
    for (name, octet, bytes) in seeds() {
        let mut input = vec![octet];
        input.extend_from_slice(&bytes);
        packet_target(&input);
        let (version, max) = fuzzing::config(octet);
        let (packets, error) = fuzzing::decode_all(&bytes, version, max);
        assert_eq!(error, None, "{name}");
        assert!(!packets.is_empty(), "{name}");
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn enc(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for p in packets {
        encode(p, version, &mut b).unwrap();
    }
    b.to_vec()
}

/// (name, config octet, stream): paho-mqtt captures and one stream per version with every
/// packet type.
fn seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let mut seeds = vec![
        ("paho_v311", 0, hex(PAHO_V311)),
        ("paho_v5", 0, hex(PAHO_V5)),
        ("paho_v31", 0, hex(PAHO_V31)),
    ];
    for (name, octet, v) in [
        ("all_v31", 1, ProtocolVersion::V3_1),
        ("all_v311", 2, ProtocolVersion::V3_1_1),
        ("all_v5", 3, ProtocolVersion::V5),
    ] {
        seeds.push((name, octet, enc(v, &every_packet(v))));
    }
    seeds
}

const PAHO_V311: &str = "101500044d5154540402003c00097061686f2d746573743214000c73656e736f72732f74656d70000132312e35821000020005612f2b2f63010003622f2302";
const PAHO_V5: &str = "101600044d5154540502003c0000097061686f2d746573743247000c73656e736f72732f74656d70000132020000003c03000a746578742f706c61696e08000a7265706c792f6865726509000201022600016b0001762600016b00017732312e35820d0002020b070005612f2b2f632d";
const PAHO_V31: &str = "101700064d51497364700302003c00097061686f2d74657374";

fn every_packet(v: ProtocolVersion) -> Vec<Packet> {
    let v5 = v.is_v5();
    let ack = |id| PubAck {
        packet_id: id,
        reason_code: if v5 {
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        } else {
            ReasonCode::SUCCESS
        },
        properties: if v5 {
            AckProperties {
                reason_string: Some("why".into()),
                ..Default::default()
            }
        } else {
            Default::default()
        },
    };
    let mut packets = vec![
        Packet::ConnAck(ConnAck::default()),
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: Bytes::from_static(b"a/b"),
            packet_id: Some(7),
            payload: Bytes::from_static(b"hello"),
            properties: if v5 {
                PublishProperties {
                    payload_format_indicator: Some(true),
                    topic_alias: Some(3),
                    subscription_identifiers: vec![1, 300],
                    user_properties: vec![("a".into(), "b".into())],
                    ..Default::default()
                }
            } else {
                Default::default()
            },
            ..Default::default()
        }),
        Packet::PubAck(ack(1)),
        Packet::PubRec(ack(7)),
        Packet::PubRel(PubRel {
            packet_id: 7,
            ..Default::default()
        }),
        Packet::PubComp(PubComp {
            packet_id: 7,
            ..Default::default()
        }),
        Packet::Subscribe(Subscribe {
            packet_id: 2,
            filters: vec![
                Subscription {
                    filter: "a/+/#".into(),
                    options: SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        retain_as_published: v5,
                        ..Default::default()
                    },
                },
                Subscription {
                    filter: "$share/g/x".into(),
                    options: Default::default(),
                },
            ],
            properties: SubscribeProperties {
                subscription_identifier: v5.then_some(9),
                ..Default::default()
            },
        }),
        Packet::SubAck(SubAck {
            packet_id: 2,
            reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::GRANTED_QOS_0],
            ..Default::default()
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 3,
            filters: vec!["a/+/#".into()],
            ..Default::default()
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 3,
            reason_codes: if v5 {
                vec![ReasonCode::SUCCESS]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        Packet::PingReq,
        Packet::PingResp,
    ];
    if v5 {
        packets.push(Packet::Auth(Auth {
            reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: AuthProperties {
                authentication_method: Some("SCRAM-SHA-256".into()),
                authentication_data: Some(Bytes::from_static(b"n,,n=user,r=abc")),
                ..Default::default()
            },
        }));
    }
    packets.push(Packet::Disconnect(Disconnect::default()));
    packets
}

/// Regenerates the seed corpus: `cargo test -p tributary-mqtt --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = fuzz_dir().join("corpus/mqtt_packet");
    fs::create_dir_all(&dir).unwrap();
    for (name, octet, bytes) in seeds() {
        let mut f = vec![octet];
        f.extend_from_slice(&bytes);
        fs::write(dir.join(name), &f).unwrap();
    }
}
