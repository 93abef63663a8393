//! The harness shared by the `xmpp_c2s` fuzz target, its corpus replay and
//! the property tests: a client stream driven by arbitrary bytes, with the
//! IO layer's answers simulated.

use crate::c2s::{Authenticator, C2sConfig, Connection, Event};
use tributary_sasl::{ScramCredentials, ScramHash};
use tributary_xmpp_xml::{Element, Limits};

struct Users;

impl Authenticator for Users {
    fn scram_credentials(&self, username: &str, hash: ScramHash) -> Option<ScramCredentials> {
        (username == "alice").then(|| ScramCredentials::fake(hash, username, b"fuzz"))
    }
    fn check_plain(&self, username: &str, password: &str) -> bool {
        username == "alice" && password == "secret"
    }
    fn secret(&self) -> &[u8] {
        b"fuzz secret"
    }
}

/// The connection setup the first octet selects: framing, TLS policy,
/// loopback, and the chunk size input is split into.
pub fn config(octet: u8) -> (C2sConfig, usize) {
    let config = C2sConfig {
        domain: "localhost".into(),
        starttls_offered: octet & 1 != 0,
        tls_required: octet & 2 != 0,
        secure: octet & 4 != 0,
        loopback: octet & 8 != 0,
        framed: octet & 16 != 0,
        registration: octet & 32 != 0,
        resumption_timeout_secs: 60,
        max_auth_attempts: 3,
        limits: Limits {
            max_stanza_bytes: 4096,
            max_depth: 8,
            max_attributes: 8,
        },
        stream_id: "fuzz".into(),
    };
    (config, usize::from(octet >> 6) * 7 + 1)
}

/// Feeds `data` (after the config octet) to a connection; in framed mode
/// NUL bytes separate WebSocket messages. Answers every event as the
/// server would. Panics only on a broken invariant: input not consumed
/// without the stream ending, or output after the stream closed.
pub fn c2s_target(data: &[u8]) {
    let Some((&octet, input)) = data.split_first() else {
        return;
    };
    let (config, chunk) = config(octet);
    let framed = config.framed;
    let mut conn = Connection::new(config);
    if framed {
        for message in input.split(|&b| b == 0) {
            conn.handle_message(message, &Users);
            answer(&mut conn);
        }
    } else {
        let mut pending: Vec<u8> = Vec::new();
        for piece in input.chunks(chunk) {
            pending.extend_from_slice(piece);
            let consumed = conn.handle_input(&pending, &Users);
            assert!(consumed <= pending.len());
            pending.drain(..consumed);
            answer(&mut conn);
            if conn.is_closed() {
                break;
            }
        }
    }
    while conn.poll_transmit().is_some() {}
    let closed = conn.is_closed();
    conn.close();
    if closed {
        assert!(
            conn.poll_transmit().is_none(),
            "output after the stream closed"
        );
    }
}

fn answer(conn: &mut Connection) {
    while let Some(event) = conn.poll_event() {
        match event {
            Event::StartTls => conn.tls_established(Default::default()),
            Event::Bind { id, resource } => {
                let jid = format!("alice@localhost/{}", resource.unwrap_or_else(|| "r".into()));
                match jid.parse() {
                    Ok(jid) => conn.bound(&id, Ok(jid)),
                    Err(_) => conn.bound(&id, Err(("modify", "bad-request"))),
                }
            }
            Event::Stanza(stanza) => {
                let _ = conn.send_stanza(stanza);
                conn.request_ack_if_due();
            }
            Event::Resume { .. } => conn.resume_failed(),
            Event::Register { id, .. } => conn.registration_done(&id, Err(("cancel", "conflict"))),
            Event::Authenticated { .. } | Event::AuthFailed | Event::Active(_) | Event::Closed => {}
        }
    }
    let _ = conn.send_stanza(Element::new("message", crate::ns::CLIENT));
}
