use super::*;
use crate::option;

fn request(mtype: Type, mid: u16, token: &'static [u8]) -> Bytes {
    let mut m = Message::new(mtype, Code::GET, mid);
    m.token = Bytes::from_static(token);
    m.add_option(option::URI_PATH, Bytes::from_static(b"ps"));
    to_bytes(&m)
}

fn drain(e: &mut Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|b| decode(b).unwrap())
        .collect()
}

fn notification(token: &'static [u8], mtype: Type) -> Message {
    let mut m = Message::new(mtype, Code::CONTENT, 0);
    m.token = Bytes::from_static(token);
    m.payload = Bytes::from_static(b"n");
    m
}

#[test]
fn a_duplicate_con_gets_the_same_piggybacked_answer_and_no_event() {
    let t0 = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 7);
    e.handle_datagram(request(Type::Con, 10, b"t"), t0).unwrap();
    let Some(Event::Request(req)) = e.poll_event() else {
        panic!("no request")
    };
    let mut resp = Message::new(Type::Ack, Code::CONTENT, 0);
    resp.payload = Bytes::from_static(b"x");
    e.respond(&req, resp);
    let first = drain(&mut e);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].mtype, Type::Ack);
    assert_eq!(first[0].message_id, 10);
    assert_eq!(&first[0].token[..], b"t");
    e.handle_datagram(request(Type::Con, 10, b"t"), t0).unwrap();
    assert_eq!(e.poll_event(), None);
    assert_eq!(drain(&mut e), first);
    // Forgotten after EXCHANGE_LIFETIME: the same id is new again.
    e.handle_timeout(t0 + Duration::from_secs(248));
    assert!(e.is_idle());
    e.handle_datagram(request(Type::Con, 10, b"t"), t0 + Duration::from_secs(248))
        .unwrap();
    assert!(matches!(e.poll_event(), Some(Event::Request(_))));
}

#[test]
fn malformed_con_is_reset_and_ping_is_reset_and_malformed_non_ignored() {
    let t0 = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 1);
    assert!(
        e.handle_datagram(Bytes::from_static(b"\x40\x01\x00\x05\xf1"), t0)
            .is_err()
    );
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].mtype, out[0].message_id), (Type::Rst, 5));
    assert!(
        e.handle_datagram(Bytes::from_static(b"\x50\x01\x00\x06\xf1"), t0)
            .is_err()
    );
    assert!(drain(&mut e).is_empty());
    e.handle_datagram(Bytes::from_static(b"\x40\x00\x00\x07"), t0)
        .unwrap();
    let out = drain(&mut e);
    assert_eq!((out[0].mtype, out[0].message_id), (Type::Rst, 7));
    assert_eq!(e.poll_event(), None);
}

#[test]
fn con_notifications_back_off_exponentially_then_time_out() {
    let t0 = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 99);
    e.send(notification(b"o", Type::Con), t0);
    assert_eq!(drain(&mut e).len(), 1);
    let first = e.poll_timeout().unwrap() - t0;
    assert!(
        first >= Duration::from_secs(2) && first <= Duration::from_secs(3),
        "{first:?}"
    );
    let mut now = t0;
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let at = e.poll_timeout().unwrap();
        gaps.push(at - now);
        now = at;
        e.handle_timeout(now);
        assert_eq!(drain(&mut e).len(), 1, "retransmission");
    }
    for w in gaps.windows(2) {
        assert_eq!(w[1], w[0] * 2);
    }
    now = e.poll_timeout().unwrap();
    e.handle_timeout(now);
    assert!(drain(&mut e).is_empty());
    assert_eq!(
        e.poll_event(),
        Some(Event::TimedOut {
            token: Bytes::from_static(b"o")
        })
    );
}

#[test]
fn nstart_holds_the_second_con_until_the_first_is_acked() {
    let t0 = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3);
    e.send(notification(b"a", Type::Con), t0);
    e.send(notification(b"b", Type::Con), t0);
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    let ack = Message::new(Type::Ack, Code::EMPTY, out[0].message_id);
    e.handle_datagram(to_bytes(&ack), t0).unwrap();
    assert_eq!(
        e.poll_event(),
        Some(Event::Acknowledged {
            token: Bytes::from_static(b"a")
        })
    );
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].token[..], b"b");
    // A reset of a NON notification names its token.
    e.send(notification(b"n", Type::Non), t0);
    let out = drain(&mut e);
    let rst = Message::new(Type::Rst, Code::EMPTY, out[0].message_id);
    e.handle_datagram(to_bytes(&rst), t0).unwrap();
    assert_eq!(
        e.poll_event(),
        Some(Event::Reset {
            token: Bytes::from_static(b"n")
        })
    );
}
