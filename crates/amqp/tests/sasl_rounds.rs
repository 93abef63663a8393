//! Challenge-response logins (SCRAM) over connection.secure / secure-ok, driven in memory: the
//! machine reports each response as `Event::AuthStep` and the test plays the application.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tributary_amqp::connection::MAX_AUTH_ROUNDS;
use tributary_amqp::*;

struct Pair {
    conn: Connection,
    now: Instant,
    from_server: BytesMut,
    to_server: BytesMut,
}

impl Pair {
    /// A connection that has sent connection.start; the client asked for
    /// `authentication_failure_close` so refusals are visible as connection.close.
    fn started() -> Pair {
        let now = Instant::now();
        let mut p = Pair {
            conn: Connection::new(ConnectionConfig::default(), now),
            now,
            from_server: BytesMut::new(),
            to_server: BytesMut::new(),
        };
        p.send_raw(&PROTOCOL_HEADER);
        let m = p.methods();
        let [(0, Method::ConnectionStart { mechanisms, .. })] = &m[..] else {
            panic!("{m:?}")
        };
        let offered: Vec<&[u8]> = mechanisms.split(|b| *b == b' ').collect();
        assert_eq!(offered[0], b"PLAIN", "PLAIN stays first");
        assert!(offered.contains(&&b"SCRAM-SHA-256"[..]));
        assert!(offered.contains(&&b"SCRAM-SHA-1"[..]));
        p
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.to_server.extend_from_slice(bytes);
        self.conn.handle_input(&mut self.to_server, self.now);
    }

    fn send(&mut self, m: &Method) {
        let mut b = BytesMut::new();
        encode_method(0, m, &mut b);
        self.send_raw(&b);
    }

    fn start_ok(&mut self, mechanism: &str, response: &'static [u8]) {
        let caps = FieldTable(vec![(
            "authentication_failure_close".into(),
            FieldValue::Bool(true),
        )]);
        self.send(&Method::ConnectionStartOk {
            client_properties: FieldTable(vec![("capabilities".into(), FieldValue::Table(caps))]),
            mechanism: mechanism.into(),
            response: Bytes::from_static(response),
            locale: "en_US".into(),
        });
    }

    fn secure_ok(&mut self, response: &'static [u8]) {
        self.send(&Method::ConnectionSecureOk {
            response: Bytes::from_static(response),
        });
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    fn methods(&mut self) -> Vec<(u16, Method)> {
        let t = self.conn.transmit();
        self.from_server.extend_from_slice(t);
        t.clear();
        let mut v = Vec::new();
        while let Some(f) = decode_frame(&mut self.from_server, 0).unwrap() {
            if let Frame::Method { channel, method } = f {
                v.push((channel, method));
            }
        }
        v
    }

    fn step(&mut self) -> (Mechanism, u8, Bytes) {
        match &self.events()[..] {
            [
                Event::AuthStep {
                    mechanism,
                    round,
                    response,
                },
            ] => (*mechanism, *round, response.clone()),
            other => panic!("expected one AuthStep, got {other:?}"),
        }
    }

    fn expect_secure(&mut self, challenge: &[u8]) {
        match &self.methods()[..] {
            [(0, Method::ConnectionSecure { challenge: c })] => assert_eq!(&c[..], challenge),
            other => panic!("expected connection.secure, got {other:?}"),
        }
    }

    fn expect_close(&mut self, code: u16) -> String {
        match &self.methods()[..] {
            [
                (
                    0,
                    Method::ConnectionClose {
                        reply_code,
                        reply_text,
                        ..
                    },
                ),
            ] => {
                assert_eq!(*reply_code, code, "{reply_text}");
                reply_text.to_string()
            }
            other => panic!("expected connection.close {code}, got {other:?}"),
        }
    }
}

#[test]
fn scram_rounds_end_with_the_final_data_and_an_empty_secure_ok() {
    for (name, mech) in [
        ("SCRAM-SHA-256", Mechanism::ScramSha256),
        ("SCRAM-SHA-1", Mechanism::ScramSha1),
    ] {
        let mut p = Pair::started();
        p.start_ok(name, b"n,,n=alice,r=abc");
        assert_eq!(p.step(), (mech, 0, Bytes::from_static(b"n,,n=alice,r=abc")));
        assert!(p.methods().is_empty(), "nothing is sent before the answer");
        p.conn.auth_challenge(b"r=abcdef,s=c2FsdA==,i=4096");
        p.expect_secure(b"r=abcdef,s=c2FsdA==,i=4096");
        p.secure_ok(b"c=biws,r=abcdef,p=cHJvb2Y=");
        assert_eq!(
            p.step(),
            (mech, 1, Bytes::from_static(b"c=biws,r=abcdef,p=cHJvb2Y="))
        );
        p.conn.accept_auth_with_data("alice", b"v=c2lnbmF0dXJl");
        p.expect_secure(b"v=c2lnbmF0dXJl");
        assert_eq!(p.conn.user(), None, "not in before the client's last word");
        p.secure_ok(b"");
        assert!(p.events().is_empty());
        assert!(matches!(
            &p.methods()[..],
            [(0, Method::ConnectionTune { .. })]
        ));
        assert_eq!(p.conn.user(), Some("alice"));
    }
}

#[test]
fn a_refused_scram_login_names_its_mechanism() {
    let mut p = Pair::started();
    p.start_ok("SCRAM-SHA-256", b"n,,n=alice,r=abc");
    p.step();
    p.conn.auth_challenge(b"r=abcdef,s=c2FsdA==,i=4096");
    p.expect_secure(b"r=abcdef,s=c2FsdA==,i=4096");
    p.secure_ok(b"c=biws,r=abcdef,p=d3Jvbmc=");
    p.step();
    p.conn.reject_auth("bad proof");
    assert_eq!(
        p.expect_close(403),
        "ACCESS_REFUSED - Login was refused using authentication mechanism SCRAM-SHA-256. \
         For details see the broker logfile."
    );
}

#[test]
fn a_non_empty_answer_to_the_final_challenge_refuses_the_login() {
    let mut p = Pair::started();
    p.start_ok("SCRAM-SHA-1", b"n,,n=alice,r=abc");
    p.step();
    p.conn.auth_challenge(b"first");
    p.methods();
    p.secure_ok(b"final");
    p.step();
    p.conn.accept_auth_with_data("alice", b"v=x");
    p.expect_secure(b"v=x");
    p.secure_ok(b"more");
    p.expect_close(403);
    assert_eq!(p.conn.user(), None);
}

#[test]
fn the_rounds_are_bounded() {
    let mut p = Pair::started();
    p.start_ok("SCRAM-SHA-256", b"n,,n=alice,r=abc");
    p.step();
    for round in 1..=MAX_AUTH_ROUNDS {
        p.conn.auth_challenge(b"again");
        p.expect_secure(b"again");
        p.secure_ok(b"x");
        assert_eq!(p.step().1, round);
    }
    p.conn.auth_challenge(b"again");
    let text = p.expect_close(403);
    assert!(text.starts_with("ACCESS_REFUSED"), "{text}");
}

#[test]
fn secure_ok_outside_an_exchange_is_a_channel_error() {
    // Before any challenge: the client is still expected to send start-ok.
    let mut p = Pair::started();
    p.secure_ok(b"x");
    assert_eq!(
        p.expect_close(504),
        "CHANNEL_ERROR - unexpected method in connection state starting"
    );

    // After a PLAIN login: the server waits for tune-ok.
    let mut p = Pair::started();
    p.start_ok("PLAIN", b"\0guest\0guest");
    assert!(matches!(
        &p.events()[..],
        [Event::Authenticate {
            mechanism: Mechanism::Plain,
            ..
        }]
    ));
    p.conn.accept_auth();
    p.methods();
    p.secure_ok(b"x");
    assert_eq!(
        p.expect_close(504),
        "CHANNEL_ERROR - unexpected method in connection state tuning"
    );
}

#[test]
fn other_methods_during_an_exchange_are_refused() {
    let mut p = Pair::started();
    p.start_ok("SCRAM-SHA-256", b"n,,n=alice,r=abc");
    p.step();
    p.conn.auth_challenge(b"first");
    p.methods();
    p.send(&Method::ConnectionTuneOk {
        channel_max: 0,
        frame_max: 0,
        heartbeat: 0,
    });
    assert_eq!(
        p.expect_close(504),
        "CHANNEL_ERROR - unexpected method in connection state securing"
    );
}

#[test]
fn scram_is_refused_when_not_offered() {
    let now = Instant::now();
    let config = ConnectionConfig {
        mechanisms: vec!["PLAIN".into()],
        ..ConnectionConfig::default()
    };
    let mut p = Pair {
        conn: Connection::new(config, now),
        now,
        from_server: BytesMut::new(),
        to_server: BytesMut::new(),
    };
    p.send_raw(&PROTOCOL_HEADER);
    p.methods();
    p.start_ok("SCRAM-SHA-256", b"n,,n=alice,r=abc");
    assert!(p.events().is_empty());
    p.expect_close(503);
}

#[test]
fn input_pipelined_behind_a_response_waits_for_the_answer() {
    // A client that sends its secure-ok and then more before the application answered: the
    // machine holds the rest until the challenge goes out.
    let mut p = Pair::started();
    p.start_ok("SCRAM-SHA-256", b"n,,n=alice,r=abc");
    p.secure_ok(b"early");
    assert!(matches!(
        &p.events()[..],
        [Event::AuthStep { round: 0, .. }]
    ));
    p.conn.auth_challenge(b"first");
    p.expect_secure(b"first");
    assert_eq!(p.step().2, Bytes::from_static(b"early"));
}
