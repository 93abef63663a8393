//! Stream negotiation, driven byte by byte as a client would.

use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tributary_sasl::{ScramCredentials, ScramHash};

struct Users;

impl Authenticator for Users {
    fn scram_credentials(&self, username: &str, hash: ScramHash) -> Option<ScramCredentials> {
        (username == "alice")
            .then(|| ScramCredentials::derive(hash, "secret", b"0123456789abcdef", 4096).ok())
            .flatten()
    }
    fn check_plain(&self, username: &str, password: &str) -> bool {
        username == "alice" && password == "secret"
    }
    fn check_external(&self, username: &str) -> bool {
        username == "alice"
    }
    fn secret(&self) -> &[u8] {
        b"server secret"
    }
}

fn config() -> C2sConfig {
    C2sConfig {
        domain: "localhost".into(),
        starttls_offered: true,
        tls_required: false,
        secure: false,
        loopback: true,
        framed: false,
        registration: false,
        resumption_timeout_secs: 300,
        max_auth_attempts: 3,
        limits: Limits::default(),
        stream_id: "s1".into(),
    }
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
                      xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

fn output(conn: &mut Connection) -> String {
    let mut out = String::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.push_str(&String::from_utf8(chunk).expect("utf-8"));
    }
    out
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn feed(conn: &mut Connection, text: &str) -> String {
    let consumed = conn.handle_input(text.as_bytes(), &Users);
    assert_eq!(consumed, text.len(), "all input consumed");
    output(conn)
}

fn plain(user: &str, password: &str) -> String {
    STANDARD.encode(format!("\0{user}\0{password}"))
}

/// Header, PLAIN, restart, bind: returns the bound connection.
fn bound_connection() -> Connection {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let out = feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    assert!(out.contains("<success"), "{out}");
    let out = feed(&mut conn, HEADER);
    assert!(out.contains("urn:ietf:params:xml:ns:xmpp-bind"), "{out}");
    events(&mut conn);
    feed(
        &mut conn,
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>",
    );
    assert_eq!(
        events(&mut conn),
        vec![Event::Bind {
            id: "b1".into(),
            resource: Some("phone".into())
        }]
    );
    conn.bound("b1", Ok("alice@localhost/phone".parse().expect("jid")));
    let out = output(&mut conn);
    assert!(out.contains("<jid>alice@localhost/phone</jid>"), "{out}");
    conn
}

#[test]
fn features_offer_starttls_and_mechanisms() {
    let mut conn = Connection::new(config());
    let out = feed(&mut conn, HEADER);
    assert!(
        out.starts_with("<?xml version='1.0'?><stream:stream"),
        "{out}"
    );
    assert!(out.contains("<stream:features>"), "{out}");
    assert!(
        out.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'"),
        "{out}"
    );
    assert!(
        out.contains("SCRAM-SHA-256") && out.contains("PLAIN"),
        "{out}"
    );
    assert!(
        !out.contains("-PLUS"),
        "no channel binding without TLS: {out}"
    );
}

#[test]
fn tls_required_hides_mechanisms_and_refuses_auth() {
    let mut conn = Connection::new(C2sConfig {
        tls_required: true,
        loopback: false,
        ..config()
    });
    let out = feed(&mut conn, HEADER);
    assert!(out.contains("<required/>"), "{out}");
    assert!(!out.contains("mechanisms"), "{out}");
    let out = feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    assert!(out.contains("policy-violation"), "{out}");
    assert!(conn.is_closed());
}

#[test]
fn plain_is_not_offered_off_loopback_without_tls() {
    let mut conn = Connection::new(C2sConfig {
        loopback: false,
        ..config()
    });
    let out = feed(&mut conn, HEADER);
    assert!(!out.contains(">PLAIN<"), "{out}");
    let out = feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    assert!(out.contains("<invalid-mechanism/>"), "{out}");
}

#[test]
fn starttls_stops_at_proceed_and_refuses_pipelined_plaintext() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let out = feed(
        &mut conn,
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    );
    assert!(out.contains("<proceed"), "{out}");
    assert_eq!(events(&mut conn), vec![Event::StartTls]);

    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let injected = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='x'/>";
    conn.handle_input(injected.as_bytes(), &Users);
    let out = output(&mut conn);
    assert!(out.contains("policy-violation"), "{out}");
    assert!(conn.is_closed());
}

#[test]
fn wrong_password_fails_and_three_failures_close() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let auth = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        plain("alice", "wrong")
    );
    for attempt in 1..=3 {
        let out = feed(&mut conn, &auth);
        assert!(out.contains("<not-authorized/>"), "{out}");
        assert_eq!(conn.is_closed(), attempt == 3, "attempt {attempt}");
    }
}

fn scram_client_final(client_first_bare: &str, server_first: &str, password: &str) -> String {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let attrs: std::collections::HashMap<&str, &str> = server_first
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let salt = STANDARD.decode(attrs["s"]).expect("salt");
    let iterations: u32 = attrs["i"].parse().expect("i");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("key");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored = Sha256::digest(&client_key);
    let without_proof = format!("c=biws,r={}", attrs["r"]);
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    format!("{without_proof},p={}", STANDARD.encode(proof))
}

fn challenge_text(out: &str) -> String {
    let start = out.find("<challenge").expect("challenge");
    let body_start = out[start..].find('>').expect(">") + start + 1;
    let end = out[body_start..].find("</challenge>").expect("end") + body_start;
    String::from_utf8(STANDARD.decode(&out[body_start..end]).expect("b64")).expect("utf-8")
}

#[test]
fn scram_sha_256_logs_in() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let first_bare = "n=alice,r=clientnonce";
    let out = feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            STANDARD.encode(format!("n,,{first_bare}"))
        ),
    );
    let server_first = challenge_text(&out);
    let final_message = scram_client_final(first_bare, &server_first, "secret");
    let out = feed(
        &mut conn,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            STANDARD.encode(final_message)
        ),
    );
    assert!(out.contains("<success"), "{out}");
    assert!(events(&mut conn).contains(&Event::Authenticated {
        username: "alice".into()
    }));

    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let out = feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            STANDARD.encode(format!("n,,{first_bare}"))
        ),
    );
    let server_first = challenge_text(&out);
    let final_message = scram_client_final(first_bare, &server_first, "not the password");
    let out = feed(
        &mut conn,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            STANDARD.encode(final_message)
        ),
    );
    assert!(out.contains("<not-authorized/>"), "{out}");
}

#[test]
fn stanzas_before_binding_are_not_authorized() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    let out = feed(
        &mut conn,
        "<message to='bob@localhost'><body>hi</body></message>",
    );
    assert!(out.contains("<not-authorized"), "{out}");
    assert!(conn.is_closed());
}

#[test]
fn bound_stanzas_become_events_and_are_counted() {
    let mut conn = bound_connection();
    let out = feed(&mut conn, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    assert!(
        out.contains("<enabled") && out.contains("resume='true'"),
        "{out}"
    );
    assert!(conn.is_resumable());
    feed(
        &mut conn,
        "<message to='bob@localhost'><body>hi</body></message>",
    );
    match events(&mut conn).as_slice() {
        [Event::Stanza(stanza)] => assert_eq!(
            stanza.child("body", ns::CLIENT).map(Element::text),
            Some("hi".into())
        ),
        other => panic!("unexpected events {other:?}"),
    }
    let out = feed(&mut conn, "<r xmlns='urn:xmpp:sm:3'/>");
    assert!(out.contains("h='1'"), "{out}");
}

#[test]
fn unacked_stanzas_are_resent_on_resume() {
    let mut conn = bound_connection();
    feed(&mut conn, "<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    for n in 0..3 {
        conn.send_stanza(
            Element::new("message", ns::CLIENT)
                .with_child(Element::new("body", ns::CLIENT).with_text(format!("m{n}"))),
        )
        .expect("sent");
    }
    feed(&mut conn, "<a xmlns='urn:xmpp:sm:3' h='1'/>");
    let jid = conn.jid().cloned().expect("jid");
    let sm = conn.take_sm().expect("sm");

    let mut next = Connection::new(config());
    feed(&mut next, HEADER);
    feed(
        &mut next,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    feed(&mut next, HEADER);
    events(&mut next);
    feed(
        &mut next,
        "<resume xmlns='urn:xmpp:sm:3' previd='s1' h='2'/>",
    );
    assert_eq!(
        events(&mut next),
        vec![Event::Resume {
            previd: "s1".into(),
            h: 2
        }]
    );
    next.resumed("s1", 2, jid, sm);
    let out = output(&mut next);
    assert!(out.contains("<resumed"), "{out}");
    assert!(
        !out.contains("m0") && !out.contains("m1"),
        "acked stanzas are not resent: {out}"
    );
    assert!(out.contains("m2"), "{out}");
}

#[test]
fn ack_beyond_what_was_sent_is_a_stream_error() {
    let mut conn = bound_connection();
    feed(&mut conn, "<enable xmlns='urn:xmpp:sm:3'/>");
    let out = feed(&mut conn, "<a xmlns='urn:xmpp:sm:3' h='5'/>");
    assert!(out.contains("undefined-condition"), "{out}");
}

#[test]
fn malformed_xml_gets_a_header_and_a_stream_error() {
    let mut conn = Connection::new(config());
    conn.handle_input(
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>",
        &Users,
    );
    let out = output(&mut conn);
    assert!(
        out.starts_with("<?xml version='1.0'?><stream:stream"),
        "{out}"
    );
    assert!(
        out.contains("<restricted-xml") || out.contains("<not-well-formed"),
        "{out}"
    );
    assert!(conn.is_closed());
}

#[test]
fn wrong_host_and_namespace_are_refused() {
    let mut conn = Connection::new(config());
    let out = feed(
        &mut conn,
        &HEADER.replace("to='localhost'", "to='example.org'"),
    );
    assert!(out.contains("<host-unknown"), "{out}");
    let mut conn = Connection::new(config());
    let out = feed(&mut conn, &HEADER.replace("jabber:client", "jabber:server"));
    assert!(out.contains("<invalid-namespace"), "{out}");
}

#[test]
fn websocket_framing_uses_open_and_close() {
    let mut conn = Connection::new(C2sConfig {
        framed: true,
        ..config()
    });
    conn.handle_message(
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        &Users,
    );
    let first = conn.poll_transmit().expect("open");
    assert!(
        String::from_utf8_lossy(&first)
            .starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
    );
    let features = String::from_utf8(conn.poll_transmit().expect("features")).expect("utf-8");
    assert!(
        features.contains("<features xmlns='http://etherx.jabber.org/streams'"),
        "{features}"
    );
    conn.handle_message(
        b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        &Users,
    );
    let out = output(&mut conn);
    assert!(
        out.contains("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
        "{out}"
    );
    assert!(conn.is_closed());
}

#[test]
fn stanzas_pipelined_behind_bind_wait_for_it() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    feed(&mut conn, HEADER);
    events(&mut conn);
    let pipelined =
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq><presence/>";
    let consumed = conn.handle_input(pipelined.as_bytes(), &Users);
    assert!(
        consumed < pipelined.len(),
        "the presence waits for the bind"
    );
    assert!(conn.is_awaiting());
    assert!(matches!(events(&mut conn).as_slice(), [Event::Bind { .. }]));
    conn.bound("b1", Ok("alice@localhost/r".parse().expect("jid")));
    let rest = &pipelined[consumed..];
    assert_eq!(conn.handle_input(rest.as_bytes(), &Users), rest.len());
    assert!(matches!(events(&mut conn).as_slice(), [Event::Stanza(p)] if p.name == "presence"));
    assert!(!conn.is_closed());
}

#[test]
fn an_answer_after_the_stream_closed_does_not_revive_it() {
    let mut conn = Connection::new(config());
    feed(&mut conn, HEADER);
    feed(
        &mut conn,
        &format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain("alice", "secret")
        ),
    );
    feed(&mut conn, HEADER);
    conn.handle_input(
        b"<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
        &Users,
    );
    conn.close_with_error("system-shutdown", None);
    output(&mut conn);
    conn.bound("b1", Ok("alice@localhost/r".parse().expect("jid")));
    assert!(conn.is_closed());
    assert_eq!(output(&mut conn), "");
}

fn external_connection(identity: Option<&str>, secure: bool) -> Connection {
    let mut conn = Connection::new(C2sConfig {
        secure,
        starttls_offered: !secure,
        ..config()
    });
    conn.set_peer_identity(identity.map(str::to_owned));
    conn
}

const EXTERNAL_AUTH: &str = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>";

#[test]
fn external_is_offered_only_with_a_verified_certificate_over_tls() {
    let out = feed(&mut external_connection(Some("alice"), true), HEADER);
    assert!(
        out.contains("<mechanism>EXTERNAL</mechanism><mechanism>SCRAM"),
        "{out}"
    );
    for mut conn in [
        external_connection(None, true),
        external_connection(Some("alice"), false),
    ] {
        let out = feed(&mut conn, HEADER);
        assert!(!out.contains("EXTERNAL"), "{out}");
        let out = feed(&mut conn, &format!("{EXTERNAL_AUTH}=</auth>"));
        assert!(out.contains("<invalid-mechanism/>"), "{out}");
    }
}

#[test]
fn external_logs_in_as_the_certificate_account() {
    // "=": an empty initial response, the certificate's identity.
    let mut conn = external_connection(Some("alice"), true);
    feed(&mut conn, HEADER);
    let out = feed(&mut conn, &format!("{EXTERNAL_AUTH}=</auth>"));
    assert!(out.contains("<success"), "{out}");
    assert_eq!(
        events(&mut conn),
        vec![Event::Authenticated {
            username: "alice".into()
        }]
    );
    // No initial response: an empty challenge, then the authzid (a JID on this domain).
    let mut conn = external_connection(Some("alice@localhost"), true);
    feed(&mut conn, HEADER);
    let out = feed(&mut conn, &format!("{EXTERNAL_AUTH}</auth>"));
    assert!(out.contains("<challenge"), "{out}");
    let out = feed(
        &mut conn,
        &format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            STANDARD.encode("alice@localhost")
        ),
    );
    assert!(out.contains("<success"), "{out}");
    assert_eq!(conn.username(), Some("alice"));
}

#[test]
fn external_refuses_other_accounts() {
    // An authzid that is not the certificate's account.
    let mut conn = external_connection(Some("alice"), true);
    feed(&mut conn, HEADER);
    let out = feed(
        &mut conn,
        &format!("{EXTERNAL_AUTH}{}</auth>", STANDARD.encode("bob@localhost")),
    );
    assert!(out.contains("<invalid-authzid/>"), "{out}");
    assert_eq!(events(&mut conn), vec![Event::AuthFailed]);
    // A certificate for an unknown account, or for another domain.
    for identity in ["mallory", "alice@elsewhere.example"] {
        let mut conn = external_connection(Some(identity), true);
        feed(&mut conn, HEADER);
        let out = feed(&mut conn, &format!("{EXTERNAL_AUTH}=</auth>"));
        assert!(out.contains("<not-authorized/>"), "{identity}: {out}");
    }
}
