//! The connection machine driven in memory: a test client writes frames with the encoders and
//! reads the server's output with `decode_frame`, on a fake clock.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tributary_amqp::connection::HANDSHAKE_FRAME_MAX;
use tributary_amqp::*;

struct Pair {
    conn: Connection,
    now: Instant,
    /// Bytes the server wrote, not yet read by the test.
    from_server: BytesMut,
    /// Bytes the client wrote, not yet consumed by the server.
    to_server: BytesMut,
}

impl Pair {
    fn new(config: ConnectionConfig) -> Pair {
        let now = Instant::now();
        Pair {
            conn: Connection::new(config, now),
            now,
            from_server: BytesMut::new(),
            to_server: BytesMut::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.to_server.extend_from_slice(bytes);
        self.conn.handle_input(&mut self.to_server, self.now);
        self.pump_out();
    }

    fn send(&mut self, channel: u16, m: &Method) {
        let mut b = BytesMut::new();
        encode_method(channel, m, &mut b);
        self.send_raw(&b);
    }

    fn pump_out(&mut self) {
        let t = self.conn.transmit();
        self.from_server.extend_from_slice(t);
        t.clear();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn frames(&mut self) -> Vec<Frame> {
        self.pump_out();
        let mut v = Vec::new();
        while let Some(f) = decode_frame(&mut self.from_server, 0).unwrap() {
            v.push(f);
        }
        v
    }

    fn methods(&mut self) -> Vec<(u16, Method)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method { channel, method } => Some((channel, method)),
                _ => None,
            })
            .collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.conn.handle_timeout(self.now);
        self.pump_out();
    }

    /// Runs the handshake up to the server's connection.tune.
    fn start(&mut self, tune: (u16, u32, u16)) {
        self.send_raw(&PROTOCOL_HEADER);
        let start = self.methods();
        assert!(matches!(start[0].1, Method::ConnectionStart { .. }));
        let mut caps = FieldTable::new();
        caps.insert("authentication_failure_close", FieldValue::Bool(true));
        let mut props = FieldTable::new();
        props.insert("capabilities", FieldValue::Table(caps));
        self.send(
            0,
            &Method::ConnectionStartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: Bytes::from_static(b"\0guest\0secret"),
                locale: "en_US".into(),
            },
        );
        let ev = self.events();
        assert_eq!(
            ev,
            vec![Event::Authenticate {
                mechanism: Mechanism::Plain,
                username: "guest".into(),
                password: "secret".into()
            }]
        );
        self.conn.accept_auth();
        let m = self.methods();
        assert_eq!(
            m,
            vec![(
                0,
                Method::ConnectionTune {
                    channel_max: 2047,
                    frame_max: 131072,
                    heartbeat: 60
                }
            )]
        );
        let (channel_max, frame_max, heartbeat) = tune;
        self.send(
            0,
            &Method::ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat,
            },
        );
    }

    /// A full handshake and channel 1 open.
    fn open(config: ConnectionConfig, tune: (u16, u32, u16)) -> Pair {
        let mut p = Pair::new(config);
        p.start(tune);
        p.send(
            0,
            &Method::ConnectionOpen {
                virtual_host: "/".into(),
                capabilities: "".into(),
                insist: false,
            },
        );
        assert_eq!(p.events(), vec![Event::Open { vhost: "/".into() }]);
        assert!(!p.conn.is_open());
        p.conn.accept_open();
        assert!(p.conn.is_open());
        assert_eq!(
            p.methods(),
            vec![(
                0,
                Method::ConnectionOpenOk {
                    known_hosts: "".into()
                }
            )]
        );
        p.send(
            1,
            &Method::ChannelOpen {
                out_of_band: "".into(),
            },
        );
        assert_eq!(p.events(), vec![Event::ChannelOpened { channel: 1 }]);
        assert_eq!(
            p.methods(),
            vec![(
                1,
                Method::ChannelOpenOk {
                    channel_id: Bytes::new()
                }
            )]
        );
        p
    }

    fn expect_connection_close(&mut self, code: u16) -> (String, u16, u16) {
        let m = self.methods();
        match m.as_slice() {
            [
                (
                    0,
                    Method::ConnectionClose {
                        reply_code,
                        reply_text,
                        class_id,
                        method_id,
                    },
                ),
            ] => {
                assert_eq!(*reply_code, code, "{reply_text}");
                (reply_text.to_string(), *class_id, *method_id)
            }
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
    }
}

fn publish(rk: &str) -> Method {
    Method::BasicPublish {
        ticket: 0,
        exchange: "ex".into(),
        routing_key: rk.into(),
        mandatory: true,
        immediate: false,
    }
}

#[test]
fn full_handshake() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 131072, 60));
    assert_eq!(p.conn.negotiated(), (2047, 131072, 60));
    assert_eq!(p.conn.user(), Some("guest"));
    assert_eq!(p.conn.vhost(), Some("/"));
    assert!(
        p.conn
            .client_properties()
            .unwrap()
            .get("capabilities")
            .is_some()
    );
    // client close
    p.send(
        0,
        &Method::ConnectionClose {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(p.methods(), vec![(0, Method::ConnectionCloseOk)]);
    assert_eq!(
        p.events(),
        vec![Event::Closed {
            reason: CloseReason::ClientClosed {
                reply_code: 200,
                reply_text: "bye".into()
            }
        }]
    );
    assert!(p.conn.is_closed());
    assert_eq!(p.conn.poll_timeout(), None);
}

#[test]
fn server_start_properties() {
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    let m = p.methods();
    let Method::ConnectionStart {
        version_major,
        version_minor,
        server_properties,
        mechanisms,
        locales,
    } = &m[0].1
    else {
        panic!()
    };
    assert_eq!((*version_major, *version_minor), (0, 9));
    assert_eq!(&mechanisms[..], b"PLAIN AMQPLAIN SCRAM-SHA-256 SCRAM-SHA-1");
    assert_eq!(&locales[..], b"en_US");
    let Some(FieldValue::Table(caps)) = server_properties.get("capabilities") else {
        panic!()
    };
    for c in [
        "publisher_confirms",
        "basic.nack",
        "connection.blocked",
        "direct_reply_to",
        "per_consumer_qos",
    ] {
        assert_eq!(caps.get(c), Some(&FieldValue::Bool(true)), "{c}");
    }
    for k in ["product", "version", "platform", "copyright", "information"] {
        assert!(server_properties.get(k).is_some(), "{k}");
    }
}

#[test]
fn header_byte_by_byte_and_amqplain() {
    let mut p = Pair::new(ConnectionConfig::default());
    for b in PROTOCOL_HEADER {
        p.send_raw(&[b]);
    }
    assert_eq!(p.methods().len(), 1);
    let mut resp = BytesMut::new();
    let t = FieldTable(vec![
        (
            "LOGIN".into(),
            FieldValue::LongStr(Bytes::from_static(b"bob")),
        ),
        (
            "PASSWORD".into(),
            FieldValue::LongStr(Bytes::from_static(b"pw")),
        ),
    ]);
    t.encode(&mut resp);
    let _ = resp.split_to(4); // AMQPLAIN responses carry no table length
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "AMQPLAIN".into(),
            response: resp.freeze(),
            locale: "en_US".into(),
        },
    );
    assert_eq!(
        p.events(),
        vec![Event::Authenticate {
            mechanism: Mechanism::AmqPlain,
            username: "bob".into(),
            password: "pw".into()
        }]
    );
}

#[test]
fn bad_protocol_headers() {
    for h in [
        &b"AMQP\x00\x00\x08\x00"[..], // 0-8
        b"AMQP\x01\x01\x00\x0a",      // 0-10
        b"AMQP\x00\x01\x00\x00",      // 1.0
        b"AMQP\x03\x01\x00\x00",      // 1.0 SASL
        b"GET / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
    ] {
        let mut p = Pair::new(ConnectionConfig::default());
        p.send_raw(h);
        assert_eq!(&p.from_server[..], &PROTOCOL_HEADER, "{h:?}");
        assert_eq!(
            p.events(),
            vec![Event::Closed {
                reason: CloseReason::BadProtocolHeader
            }]
        );
    }
    // 0-9 is accepted as 0-9-1, as RabbitMQ does.
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(b"AMQP\x01\x01\x00\x09");
    assert!(matches!(p.methods()[0].1, Method::ConnectionStart { .. }));
}

#[test]
fn publish_assembly_zero_one_three_bodies() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 4096, 0));
    let props = BasicProperties {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    // zero body frames
    let mut b = BytesMut::new();
    encode_method(1, &publish("a"), &mut b);
    encode_header(1, 60, 0, &props, &mut b);
    // one body frame
    encode_method(1, &publish("b"), &mut b);
    encode_header(1, 60, 5, &props, &mut b);
    encode_body(1, b"hello", 4096, &mut b);
    // three body frames (4088 octets per frame)
    let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    encode_method(1, &publish("c"), &mut b);
    encode_header(1, 60, big.len() as u64, &props, &mut b);
    encode_body(1, &big, 4096, &mut b);
    p.send_raw(&b);
    let ev = p.events();
    assert_eq!(ev.len(), 3);
    let bodies: Vec<(String, Bytes)> = ev
        .into_iter()
        .map(|e| match e {
            Event::Publish {
                channel: 1,
                exchange,
                routing_key,
                mandatory: true,
                properties,
                body,
                ..
            } => {
                assert_eq!(exchange, "ex");
                assert_eq!(properties, props);
                (routing_key.to_string(), body)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bodies[0], ("a".to_string(), Bytes::new()));
    assert_eq!(bodies[1], ("b".to_string(), Bytes::from_static(b"hello")));
    assert_eq!(bodies[2].0, "c");
    assert_eq!(&bodies[2].1[..], &big[..]);
    assert!(p.methods().is_empty());
}

#[test]
fn content_interleaved_across_channels_and_byte_splits() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 4096, 0));
    p.send(
        2,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
    );
    p.events();
    p.methods();
    let mut b = BytesMut::new();
    encode_method(1, &publish("one"), &mut b);
    encode_method(2, &publish("two"), &mut b);
    encode_header(2, 60, 3, &BasicProperties::default(), &mut b);
    encode_header(1, 60, 3, &BasicProperties::default(), &mut b);
    encode_body(1, b"111", 4096, &mut b);
    encode_heartbeat(&mut b);
    encode_body(2, b"222", 4096, &mut b);
    for byte in b.iter() {
        p.send_raw(&[*byte]);
    }
    let ev = p.events();
    assert!(matches!(&ev[0], Event::Publish { channel: 1, body, .. } if &body[..] == b"111"));
    assert!(matches!(&ev[1], Event::Publish { channel: 2, body, .. } if &body[..] == b"222"));
    assert!(p.to_server.is_empty());
}

#[test]
fn channel_error_vs_connection_error() {
    let config = ConnectionConfig {
        max_message_size: 100,
        ..Default::default()
    };
    let mut p = Pair::open(config, (2047, 4096, 0));
    // Too large a message is a channel error (406), its body frames are dropped.
    let mut b = BytesMut::new();
    encode_method(1, &publish("x"), &mut b);
    encode_header(1, 60, 200, &BasicProperties::default(), &mut b);
    encode_body(1, &[0u8; 200], 4096, &mut b);
    p.send_raw(&b);
    assert!(p.events().is_empty());
    let m = p.methods();
    let [
        (
            1,
            Method::ChannelClose {
                reply_code: 406,
                reply_text,
                class_id: 60,
                method_id: 40,
            },
        ),
    ] = m.as_slice()
    else {
        panic!("{m:?}")
    };
    assert_eq!(
        reply_text,
        "PRECONDITION_FAILED - message size 200 is larger than configured max size 100"
    );
    // Ignored until close-ok.
    p.send(
        1,
        &Method::BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        },
    );
    assert!(p.events().is_empty());
    p.send(1, &Method::ChannelCloseOk);
    assert_eq!(p.events(), vec![Event::ChannelCloseOk { channel: 1 }]);
    assert!(p.conn.is_open());
    // Application-initiated channel close works the same way.
    p.send(
        1,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
    );
    p.events();
    p.methods();
    p.conn
        .close_channel(1, 404, "no queue 'q' in vhost '/'", 50, 10);
    let m = p.methods();
    assert!(
        matches!(
            &m[..],
            [(
                1,
                Method::ChannelClose {
                    reply_code: 404,
                    ..
                }
            )]
        ),
        "{m:?}"
    );
    p.send(1, &Method::ChannelCloseOk);
    assert_eq!(p.events(), vec![Event::ChannelCloseOk { channel: 1 }]);

    // A method on a channel that was never opened is a connection error (504).
    p.send(
        7,
        &Method::BasicQos {
            prefetch_size: 0,
            prefetch_count: 1,
            global: false,
        },
    );
    let (text, class_id, method_id) = p.expect_connection_close(504);
    assert_eq!(text, "CHANNEL_ERROR - expected 'channel.open'");
    assert_eq!((class_id, method_id), (60, 10));
    assert!(!p.conn.is_open());
    // Everything but close-ok is ignored now.
    p.send(
        1,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
    );
    assert!(p.events().is_empty());
    assert!(p.methods().is_empty());
    p.send(0, &Method::ConnectionCloseOk);
    assert_eq!(
        p.events(),
        vec![Event::Closed {
            reason: CloseReason::ServerClosed {
                reply_code: 504,
                reply_text: text
            }
        }]
    );
}

#[test]
fn connection_errors_and_codes() {
    type Writes = Box<dyn Fn(&mut BytesMut)>;
    let cases: Vec<(&str, Writes, u16)> = vec![
        (
            "second channel.open",
            Box::new(|b| {
                encode_method(
                    1,
                    &Method::ChannelOpen {
                        out_of_band: "".into(),
                    },
                    b,
                )
            }),
            504,
        ),
        (
            "header without method",
            Box::new(|b| encode_header(1, 60, 1, &BasicProperties::default(), b)),
            505,
        ),
        (
            "body without method",
            Box::new(|b| encode_body(1, b"x", 0, b)),
            505,
        ),
        (
            "method while expecting header",
            Box::new(|b| {
                encode_method(1, &publish("x"), b);
                encode_method(1, &publish("x"), b);
            }),
            505,
        ),
        (
            "method while expecting body",
            Box::new(|b| {
                encode_method(1, &publish("x"), b);
                encode_header(1, 60, 5, &BasicProperties::default(), b);
                encode_method(1, &Method::TxSelect, b);
            }),
            505,
        ),
        (
            "wrong content class",
            Box::new(|b| {
                encode_method(1, &publish("x"), b);
                encode_header(1, 50, 5, &BasicProperties::default(), b);
            }),
            505,
        ),
        (
            "body larger than announced",
            Box::new(|b| {
                encode_method(1, &publish("x"), b);
                encode_header(1, 60, 2, &BasicProperties::default(), b);
                encode_body(1, b"xyz", 0, b);
            }),
            501,
        ),
        (
            "heartbeat on a channel",
            Box::new(|b| b.extend_from_slice(b"\x08\x00\x01\x00\x00\x00\x00\xce")),
            505,
        ),
        (
            "content on channel 0",
            Box::new(|b| encode_body(0, b"x", 0, b)),
            505,
        ),
        (
            "unknown frame type",
            Box::new(|b| b.extend_from_slice(b"\x04\x00\x00\x00\x00\x00\x00\xce")),
            501,
        ),
        (
            "unknown method",
            Box::new(|b| b.extend_from_slice(b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x00\x63\xce")),
            540,
        ),
        (
            "truncated method",
            Box::new(|b| {
                b.extend_from_slice(b"\x01\x00\x01\x00\x00\x00\x05\x00\x3c\x00\x28\x00\xce")
            }),
            501,
        ),
        (
            "bad table type",
            Box::new(|b| {
                b.extend_from_slice(b"\x01\x00\x01\x00\x00\x00\x14\x00\x32\x00\x0a\x00\x00\x01q\x00\x00\x00\x00\x07\x01kZ\x00\x00\x00\x00\xce")
            }),
            502,
        ),
        (
            "channel.open above channel_max",
            Box::new(|b| {
                encode_method(
                    3000,
                    &Method::ChannelOpen {
                        out_of_band: "".into(),
                    },
                    b,
                )
            }),
            530,
        ),
        (
            "connection method on a channel",
            Box::new(|b| {
                encode_method(
                    1,
                    &Method::ConnectionTuneOk {
                        channel_max: 0,
                        frame_max: 0,
                        heartbeat: 0,
                    },
                    b,
                )
            }),
            503,
        ),
        (
            "unexpected connection method",
            Box::new(|b| {
                encode_method(
                    0,
                    &Method::ConnectionTuneOk {
                        channel_max: 0,
                        frame_max: 0,
                        heartbeat: 0,
                    },
                    b,
                )
            }),
            504,
        ),
        (
            "server-only content method",
            Box::new(|b| {
                encode_method(
                    1,
                    &Method::BasicDeliver {
                        consumer_tag: "".into(),
                        delivery_tag: 1,
                        redelivered: false,
                        exchange: "".into(),
                        routing_key: "".into(),
                    },
                    b,
                )
            }),
            503,
        ),
        (
            "bad frame end",
            Box::new(|b| b.extend_from_slice(b"\x08\x00\x00\x00\x00\x00\x00\x00")),
            501,
        ),
        (
            "frame too large",
            Box::new(|b| b.extend_from_slice(b"\x03\x00\x01\x00\x01\x00\x00")),
            501,
        ),
    ];
    for (name, write, code) in cases {
        let mut p = Pair::open(ConnectionConfig::default(), (2047, 4096, 0));
        let mut b = BytesMut::new();
        write(&mut b);
        p.send_raw(&b);
        let m = p.methods();
        let reply = match m.as_slice() {
            [
                (
                    0,
                    Method::ConnectionClose {
                        reply_code,
                        reply_text,
                        ..
                    },
                ),
            ] => (*reply_code, reply_text.to_string()),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(reply.0, code, "{name}: {}", reply.1);
        assert!(
            reply.1.starts_with(reply::name(code).unwrap()),
            "{name}: {}",
            reply.1
        );
        if name == "bad frame end" || name == "frame too large" {
            // Out of sync: no close-ok can be read, so the connection ends at once.
            assert!(p.conn.is_closed(), "{name}");
        } else {
            assert!(!p.conn.is_closed(), "{name}");
            p.advance(Duration::from_secs(31));
            assert!(p.conn.is_closed(), "{name}: close timeout");
        }
    }
}

#[test]
fn tune_negotiation() {
    // The client's 0 means "no limit": the server's values apply.
    let p = Pair::open(ConnectionConfig::default(), (0, 0, 0));
    assert_eq!(p.conn.negotiated(), (2047, 131072, 0));
    assert_eq!(p.conn.poll_timeout(), None);
    // Lower values win.
    let p = Pair::open(ConnectionConfig::default(), (10, 8192, 5));
    assert_eq!(p.conn.negotiated(), (10, 8192, 5));
    // Refusals, as RabbitMQ words them (530, connection.tune).
    for (tune, text) in [
        (
            (2047, 1024, 60),
            "NOT_ALLOWED - negotiated frame_max = 1024 is lower than the minimum allowed value (4096)",
        ),
        (
            (2047, 200_000, 60),
            "NOT_ALLOWED - negotiated frame_max = 200000 is higher than the maximum allowed value (131072)",
        ),
        (
            (4000, 131072, 60),
            "NOT_ALLOWED - negotiated channel_max = 4000 is higher than the maximum allowed value (2047)",
        ),
    ] {
        let mut p = Pair::new(ConnectionConfig::default());
        p.start(tune);
        let (t, class_id, method_id) = p.expect_connection_close(530);
        assert_eq!(t, text);
        assert_eq!((class_id, method_id), (10, 30));
    }
}

#[test]
fn handshake_frame_limit_before_tune() {
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    let mut b = BytesMut::new();
    encode_body(0, &vec![0u8; HANDSHAKE_FRAME_MAX as usize + 1], 0, &mut b);
    p.send_raw(&b[..7]);
    p.expect_connection_close(501);
    assert!(p.conn.is_closed());
}

#[test]
fn heartbeats() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 131072, 10));
    // We send a heartbeat after half an interval of silence.
    let t = p.conn.poll_timeout().unwrap();
    assert_eq!(t - p.now, Duration::from_secs(5));
    p.advance(Duration::from_secs(5));
    assert_eq!(p.frames(), vec![Frame::Heartbeat { channel: 0 }]);
    // Receiving anything resets the idle timer.
    p.advance(Duration::from_secs(10));
    assert!(!p.conn.is_closed());
    p.send_raw(b"\x08\x00\x00\x00\x00\x00\x00\xce");
    p.advance(Duration::from_secs(15));
    assert!(!p.conn.is_closed());
    p.frames();
    // Two intervals without input: dropped without a close frame.
    p.advance(Duration::from_secs(5));
    assert!(p.conn.is_closed());
    assert_eq!(
        p.events(),
        vec![Event::Closed {
            reason: CloseReason::HeartbeatTimeout
        }]
    );
    assert!(p.methods().is_empty());
}

#[test]
fn handshake_timeout() {
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    assert_eq!(p.conn.poll_timeout(), Some(p.now + Duration::from_secs(10)));
    p.advance(Duration::from_secs(9));
    assert!(!p.conn.is_closed());
    p.advance(Duration::from_secs(1));
    assert_eq!(
        p.events(),
        vec![Event::Closed {
            reason: CloseReason::HandshakeTimeout
        }]
    );
}

#[test]
fn auth_and_vhost_refusals() {
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable(vec![(
                "capabilities".into(),
                FieldValue::Table(FieldTable(vec![(
                    "authentication_failure_close".into(),
                    FieldValue::Bool(true),
                )])),
            )]),
            mechanism: "PLAIN".into(),
            response: Bytes::from_static(b"\0guest\0wrong"),
            locale: "en_US".into(),
        },
    );
    p.events();
    p.conn.reject_auth("user 'guest' - invalid credentials");
    let (text, _, _) = p.expect_connection_close(403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
    p.send(0, &Method::ConnectionCloseOk);
    assert!(matches!(
        &p.events()[..],
        [Event::Closed {
            reason: CloseReason::ServerClosed {
                reply_code: 403,
                ..
            }
        }]
    ));

    // Unknown mechanism: 503 COMMAND_INVALID.
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "EXTERNAL".into(),
            response: Bytes::new(),
            locale: "en_US".into(),
        },
    );
    let (text, _, _) = p.expect_connection_close(503);
    assert_eq!(
        text,
        "COMMAND_INVALID - unknown authentication mechanism 'EXTERNAL'"
    );

    // Bad PLAIN response: 502.
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: Bytes::from_static(b"guest"),
            locale: "en_US".into(),
        },
    );
    p.expect_connection_close(502);

    // vhost refused.
    let mut p = Pair::new(ConnectionConfig::default());
    p.start((0, 0, 0));
    p.send(
        0,
        &Method::ConnectionOpen {
            virtual_host: "x".into(),
            capabilities: "".into(),
            insist: false,
        },
    );
    p.events();
    p.conn.reject_open(530, "vhost x not found");
    let (text, c, m) = p.expect_connection_close(530);
    assert_eq!(
        (text.as_str(), c, m),
        ("NOT_ALLOWED - vhost x not found", 10, 40)
    );
}

#[test]
fn pipelined_input_during_decisions() {
    // open and channel.open in one write, before open-ok: buffered until accept_open.
    let mut p = Pair::new(ConnectionConfig::default());
    p.start((0, 0, 0));
    let mut b = BytesMut::new();
    encode_method(
        0,
        &Method::ConnectionOpen {
            virtual_host: "/".into(),
            capabilities: "".into(),
            insist: false,
        },
        &mut b,
    );
    encode_method(
        1,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
        &mut b,
    );
    encode_method(1, &publish("x"), &mut b);
    encode_header(1, 60, 2, &BasicProperties::default(), &mut b);
    encode_body(1, b"ab", 0, &mut b);
    // Leave the body frame incomplete.
    let tail = b.split_off(b.len() - 3);
    p.send_raw(&b);
    assert_eq!(p.events(), vec![Event::Open { vhost: "/".into() }]);
    p.conn.accept_open();
    assert_eq!(p.events(), vec![Event::ChannelOpened { channel: 1 }]);
    p.send_raw(&tail);
    assert!(matches!(&p.events()[..], [Event::Publish { body, .. }] if &body[..] == b"ab"));
    // Back to direct, zero-copy input.
    let mut b = BytesMut::new();
    encode_method(1, &publish("y"), &mut b);
    encode_header(1, 60, 1, &BasicProperties::default(), &mut b);
    encode_body(1, b"z", 0, &mut b);
    p.send_raw(&b);
    assert_eq!(p.events().len(), 1);
}

#[test]
fn server_close_and_send_content() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 4096, 0));
    let deliver = Method::BasicDeliver {
        consumer_tag: "c".into(),
        delivery_tag: 1,
        redelivered: false,
        exchange: "ex".into(),
        routing_key: "rk".into(),
    };
    let body = vec![9u8; 10_000];
    p.conn
        .send_content(1, &deliver, &BasicProperties::default(), &body);
    let frames = p.frames();
    assert_eq!(frames.len(), 2 + 3);
    assert_eq!(
        frames[0],
        Frame::Method {
            channel: 1,
            method: deliver
        }
    );
    assert!(matches!(
        frames[1],
        Frame::Header {
            body_size: 10_000,
            class_id: 60,
            ..
        }
    ));
    p.conn.close(
        320,
        "broker forced connection closure with reason 'shutdown'",
        0,
        0,
    );
    let (text, _, _) = p.expect_connection_close(320);
    assert_eq!(
        text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
    // Crossing close from the client: answered, and over.
    p.send(
        0,
        &Method::ConnectionClose {
            reply_code: 200,
            reply_text: "".into(),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(p.methods(), vec![(0, Method::ConnectionCloseOk)]);
    assert!(p.conn.is_closed());
}

#[test]
fn client_channel_close_and_methods() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 131072, 0));
    let qos = Method::BasicQos {
        prefetch_size: 0,
        prefetch_count: 5,
        global: false,
    };
    p.send(1, &qos);
    assert_eq!(
        p.events(),
        vec![Event::Method {
            channel: 1,
            method: qos
        }]
    );
    p.send(
        1,
        &Method::ChannelClose {
            reply_code: 200,
            reply_text: "".into(),
            class_id: 0,
            method_id: 0,
        },
    );
    assert_eq!(p.events(), vec![Event::ChannelClosed { channel: 1 }]);
    assert_eq!(p.methods(), vec![(1, Method::ChannelCloseOk)]);
    // The id can be reused.
    p.send(
        1,
        &Method::ChannelOpen {
            out_of_band: "".into(),
        },
    );
    assert_eq!(p.events(), vec![Event::ChannelOpened { channel: 1 }]);
}

#[test]
fn paused_reading_restarts_the_missed_heartbeat_deadline() {
    let mut p = Pair::open(ConnectionConfig::default(), (2047, 131072, 10));
    // Flow control: the driver stops reading; the client's heartbeats pile up unread.
    p.advance(Duration::from_secs(15));
    let now = p.now;
    p.conn.reading_paused(now);
    p.advance(Duration::from_secs(15));
    assert!(
        !p.conn.is_closed(),
        "dropped while the broker itself was not reading"
    );
    // Once reading resumes, silence counts again.
    p.advance(Duration::from_secs(10));
    assert!(p.conn.is_closed());
}

#[test]
fn external_is_offered_only_when_configured() {
    // Plain TCP, or TLS without a verified client certificate: not offered, refused if chosen.
    let mut p = Pair::new(ConnectionConfig::default());
    p.send_raw(&PROTOCOL_HEADER);
    let m = p.methods();
    let Method::ConnectionStart { mechanisms, .. } = &m[0].1 else {
        panic!()
    };
    assert!(!mechanisms.windows(8).any(|w| w == b"EXTERNAL"));

    // A verified client certificate: offered first, and the login flows to the application.
    let config = ConnectionConfig::default().with_external().with_external();
    assert_eq!(
        config.mechanisms,
        vec![
            "EXTERNAL",
            "PLAIN",
            "AMQPLAIN",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1"
        ]
    );
    let mut p = Pair::new(config);
    p.send_raw(&PROTOCOL_HEADER);
    let m = p.methods();
    let Method::ConnectionStart { mechanisms, .. } = &m[0].1 else {
        panic!()
    };
    assert_eq!(
        &mechanisms[..],
        b"EXTERNAL PLAIN AMQPLAIN SCRAM-SHA-256 SCRAM-SHA-1"
    );
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable::default(),
            mechanism: "EXTERNAL".into(),
            response: Bytes::new(),
            locale: "en_US".into(),
        },
    );
    assert_eq!(
        p.events(),
        vec![Event::Authenticate {
            mechanism: Mechanism::External,
            username: String::new(),
            password: String::new()
        }]
    );
    p.conn.accept_auth_as("alice");
    assert!(matches!(
        &p.methods()[..],
        [(0, Method::ConnectionTune { .. })]
    ));
    assert_eq!(p.conn.user(), Some("alice"));
}

#[test]
fn external_refusal_names_the_mechanism() {
    let mut p = Pair::new(ConnectionConfig::default().with_external());
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    p.send(
        0,
        &Method::ConnectionStartOk {
            client_properties: FieldTable(vec![(
                "capabilities".into(),
                FieldValue::Table(FieldTable(vec![(
                    "authentication_failure_close".into(),
                    FieldValue::Bool(true),
                )])),
            )]),
            mechanism: "EXTERNAL".into(),
            response: Bytes::from_static(b"mallory"),
            locale: "en_US".into(),
        },
    );
    assert!(matches!(
        &p.events()[..],
        [Event::Authenticate { mechanism: Mechanism::External, username, .. }] if username == "mallory"
    ));
    p.conn.reject_auth("unknown user");
    let (text, _, _) = p.expect_connection_close(403);
    assert_eq!(
        text,
        "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
    );
}
