use super::*;
use tributary_xmpp_xml::Element;

fn config(domain: &str, secret: &str) -> S2sConfig {
    S2sConfig {
        local_domain: domain.into(),
        local_services: vec![format!("conference.{domain}")],
        stream_id: format!("id-{domain}"),
        limits: Limits::default(),
        tls_offered: false,
        require_encryption: false,
        dialback: true,
        secure: false,
        secret: secret.as_bytes().to_vec(),
        handshake_timeout_ms: 30_000,
        idle_timeout_ms: 600_000,
    }
}

fn drain_out(out: &mut Outbound) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(b) = out.poll_transmit() {
        bytes.extend(b);
    }
    bytes
}

fn drain_in(inb: &mut Inbound) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(b) = inb.poll_transmit() {
        bytes.extend(b);
    }
    bytes
}

/// Moves bytes both ways until neither side has anything to say.
fn pump(out: &mut Outbound, inb: &mut Inbound) {
    for _ in 0..20 {
        let a = drain_out(out);
        let b = drain_in(inb);
        if a.is_empty() && b.is_empty() {
            return;
        }
        inb.handle_input(&a, 0);
        out.handle_input(&b, 0);
    }
}

fn events_in(inb: &mut Inbound) -> Vec<Event> {
    std::iter::from_fn(|| inb.poll_event()).collect()
}

fn events_out(out: &mut Outbound) -> Vec<Event> {
    std::iter::from_fn(|| out.poll_event()).collect()
}

#[test]
fn dialback_key_matches_xep_0185_example() {
    let key = dialback_key(
        b"s3cr3tf0rd14lb4ck",
        "xmpp.example.com",
        "example.org",
        "D60000229F",
    );
    assert_eq!(
        key,
        "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
    );
    assert!(verify_key(
        b"s3cr3tf0rd14lb4ck",
        "xmpp.example.com",
        "example.org",
        "D60000229F",
        &format!(" {key}\n"),
    ));
    assert!(!verify_key(
        b"s3cr3tf0rd14lb4ck",
        "xmpp.example.com",
        "example.org",
        "D60000229G",
        &key
    ));
    assert!(!verify_key(
        b"other",
        "xmpp.example.com",
        "example.org",
        "D60000229F",
        &key
    ));
}

/// a.test connects to b.test with dialback; b.test asks a.test (the
/// authoritative server) over a second stream; then a stanza flows.
#[test]
fn dialback_round_trip_then_stanza() {
    let mut a_out = Outbound::new(config("a.test", "secret-a"), "b.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(config("b.test", "secret-b"), 0);
    pump(&mut a_out, &mut b_in);
    let verify = events_in(&mut b_in)
        .into_iter()
        .find_map(|e| match e {
            Event::VerifyDialback {
                from,
                to,
                key,
                stream_id,
            } => Some((from, to, key, stream_id)),
            _ => None,
        })
        .expect("b asks to verify");
    assert_eq!((verify.0.as_str(), verify.1.as_str()), ("a.test", "b.test"));

    // b.test -> a.test verify stream.
    let mut b_out = Outbound::new(
        config("b.test", "secret-b"),
        "a.test",
        Purpose::Verify {
            stream_id: verify.3.clone(),
            key: verify.2.clone(),
        },
        0,
    );
    let mut a_in = Inbound::new(config("a.test", "secret-a"), 0);
    pump(&mut b_out, &mut a_in);
    let result = events_out(&mut b_out);
    assert!(
        result.contains(&Event::VerifyResult {
            domain: "a.test".into(),
            stream_id: verify.3.clone(),
            valid: true
        }),
        "{result:?}"
    );

    b_in.dialback_verified("a.test", "b.test", true);
    pump(&mut a_out, &mut b_in);
    assert!(a_out.is_ready());
    assert!(events_out(&mut a_out).contains(&Event::Authenticated {
        domain: "b.test".into(),
        method: "dialback"
    }));
    let stanza = Element::new("message", ns::CLIENT)
        .with_attr("from", "alice@a.test/x")
        .with_attr("to", "bob@b.test")
        .with_child(Element::new("body", ns::CLIENT).with_text("hi"));
    a_out.send_stanza(stanza.clone(), 5).expect("ready");
    pump(&mut a_out, &mut b_in);
    let got = events_in(&mut b_in);
    assert!(got.contains(&Event::Stanza(stanza)), "{got:?}");
}

#[test]
fn a_forged_key_is_invalid() {
    let mut b_out = Outbound::new(
        config("b.test", "secret-b"),
        "a.test",
        Purpose::Verify {
            stream_id: "s1".into(),
            key: "00".repeat(32),
        },
        0,
    );
    let mut a_in = Inbound::new(config("a.test", "secret-a"), 0);
    pump(&mut b_out, &mut a_in);
    assert!(events_out(&mut b_out).contains(&Event::VerifyResult {
        domain: "a.test".into(),
        stream_id: "s1".into(),
        valid: false
    }));
}

#[test]
fn failed_dialback_closes_the_outbound_stream() {
    let mut a_out = Outbound::new(config("a.test", "s"), "b.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(config("b.test", "s"), 0);
    pump(&mut a_out, &mut b_in);
    b_in.dialback_verified("a.test", "b.test", false);
    pump(&mut a_out, &mut b_in);
    assert!(!a_out.is_ready());
    assert!(a_out.is_closed());
    assert!(events_out(&mut a_out).contains(&Event::Closed {
        condition: Some("not-authorized".into())
    }));
}

#[test]
fn external_with_a_valid_certificate() {
    let mut cfg_a = config("a.test", "s");
    cfg_a.require_encryption = true;
    let mut cfg_b = config("b.test", "s");
    cfg_b.tls_offered = true;
    cfg_b.require_encryption = true;
    let mut a_out = Outbound::new(cfg_a, "b.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(cfg_b, 0);
    pump(&mut a_out, &mut b_in);
    assert_eq!(events_out(&mut a_out), vec![Event::StartTls]);
    assert_eq!(events_in(&mut b_in), vec![Event::StartTls]);
    b_in.tls_established(vec!["a.test".into()]);
    a_out.tls_established();
    pump(&mut a_out, &mut b_in);
    assert!(a_out.is_ready());
    assert!(events_in(&mut b_in).contains(&Event::Authenticated {
        domain: "a.test".into(),
        method: "EXTERNAL"
    }));
    assert_eq!(b_in.authenticated_domains(), ["a.test".to_string()]);
}

#[test]
fn encryption_required_but_not_offered() {
    let mut cfg_a = config("a.test", "s");
    cfg_a.require_encryption = true;
    let mut a_out = Outbound::new(cfg_a, "b.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(config("b.test", "s"), 0);
    pump(&mut a_out, &mut b_in);
    assert!(a_out.is_closed());
    assert!(events_out(&mut a_out).contains(&Event::Closed {
        condition: Some("policy-violation".into())
    }));
}

fn inbound_reply(input: &str) -> (String, Vec<Event>) {
    let mut inb = Inbound::new(config("b.test", "s"), 0);
    inb.handle_input(input.as_bytes(), 0);
    let out = String::from_utf8(drain_in(&mut inb)).expect("utf-8");
    (out, events_in(&mut inb))
}

const HEADER: &str = "<stream:stream xmlns='jabber:server' \
    xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
    from='a.test' to='b.test' version='1.0'>";

#[test]
fn header_errors() {
    let (out, _) = inbound_reply(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='b.test' version='1.0'>",
    );
    assert!(out.contains("<invalid-namespace"), "{out}");
    let (out, _) = inbound_reply(&HEADER.replace("to='b.test'", "to='c.test'"));
    assert!(out.contains("<host-unknown"), "{out}");
    let (out, _) = inbound_reply(&HEADER.replace("version='1.0'", "version='2.0'"));
    assert!(out.contains("<unsupported-version"), "{out}");
    let (out, _) = inbound_reply(HEADER);
    assert!(out.contains("<stream:features>"), "{out}");
    assert!(out.contains("urn:xmpp:features:dialback"), "{out}");
    assert!(out.contains("id='id-b.test'"), "{out}");
}

#[test]
fn stanzas_need_an_authenticated_domain() {
    let (out, events) = inbound_reply(&format!(
        "{HEADER}<message from='x@a.test' to='y@b.test'><body>hi</body></message>"
    ));
    assert!(out.contains("<not-authorized"), "{out}");
    assert!(events.contains(&Event::Closed {
        condition: Some("not-authorized".into())
    }));
}

#[test]
fn stanzas_from_another_domain_are_invalid_from() {
    let mut inb = Inbound::new(config("b.test", "s"), 0);
    inb.handle_input(
        format!("{HEADER}<db:result from='a.test' to='b.test'>k</db:result>").as_bytes(),
        0,
    );
    inb.dialback_verified("a.test", "b.test", true);
    inb.handle_input(
        b"<message from='x@evil.test' to='y@b.test'><body>hi</body></message>",
        0,
    );
    let out = String::from_utf8(drain_in(&mut inb)).expect("utf-8");
    assert!(out.contains("type='valid'"), "{out}");
    assert!(out.contains("<invalid-from"), "{out}");
}

#[test]
fn stanzas_to_a_foreign_domain_are_host_unknown() {
    let mut inb = Inbound::new(config("b.test", "s"), 0);
    inb.handle_input(
        format!("{HEADER}<db:result from='a.test' to='b.test'>k</db:result>").as_bytes(),
        0,
    );
    inb.dialback_verified("a.test", "b.test", true);
    inb.handle_input(b"<message from='x@a.test' to='y@c.test'/>", 0);
    let out = String::from_utf8(drain_in(&mut inb)).expect("utf-8");
    assert!(out.contains("<host-unknown"), "{out}");
}

#[test]
fn data_after_starttls_is_refused() {
    let mut cfg = config("b.test", "s");
    cfg.tls_offered = true;
    let mut inb = Inbound::new(cfg, 0);
    inb.handle_input(
        format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message/>").as_bytes(),
        0,
    );
    let out = String::from_utf8(drain_in(&mut inb)).expect("utf-8");
    assert!(out.contains("<proceed"), "{out}");
    assert!(out.contains("<policy-violation"), "{out}");
}

#[test]
fn handshake_and_idle_timeouts() {
    let mut inb = Inbound::new(config("b.test", "s"), 1_000);
    assert_eq!(inb.poll_timeout(), Some(31_000));
    inb.handle_timeout(30_999);
    assert!(!inb.is_closed());
    inb.handle_timeout(31_000);
    assert!(inb.is_closed());
    let out = String::from_utf8(drain_in(&mut inb)).expect("utf-8");
    assert!(out.contains("<connection-timeout"), "{out}");

    let mut a_out = Outbound::new(config("a.test", "s"), "b.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(config("b.test", "s"), 0);
    pump(&mut a_out, &mut b_in);
    b_in.dialback_verified("a.test", "b.test", true);
    pump(&mut a_out, &mut b_in);
    assert!(a_out.is_ready());
    let stanza = Element::new("message", ns::CLIENT)
        .with_attr("from", "x@a.test")
        .with_attr("to", "y@b.test");
    a_out.send_stanza(stanza, 10_000).expect("ready");
    assert_eq!(a_out.poll_timeout(), Some(610_000));
    a_out.handle_timeout(609_999);
    assert!(a_out.is_ready());
    a_out.handle_timeout(610_000);
    assert!(a_out.is_closed());
    assert!(events_out(&mut a_out).contains(&Event::Closed { condition: None }));
}

#[test]
fn peer_stream_error_is_reported() {
    let mut a_out = Outbound::new(config("a.test", "s"), "c.test", Purpose::Stanzas, 0);
    let mut b_in = Inbound::new(config("b.test", "s"), 0);
    pump(&mut a_out, &mut b_in);
    assert!(events_out(&mut a_out).contains(&Event::Closed {
        condition: Some("host-unknown".into())
    }));
}

#[test]
fn certificate_names() {
    assert!(name_matches("a.test", "A.test"));
    assert!(name_matches("*.a.test", "conference.a.test"));
    assert!(!name_matches("*.a.test", "a.test"));
    assert!(!name_matches("*.a.test", "x.y.a.test"));
    assert_eq!(jid_domain("u@d.test/r@x"), "d.test");
    assert_eq!(jid_domain("d.test"), "d.test");
}
