//! SaslHandshake (v1) and SaslAuthenticate: PLAIN against the user database, SCRAM-SHA-256
//! through `crate::scram` (the same exchange AMQP and MQTT 5 run).

use bytes::{Bytes, BytesMut};
use tributary_kafka::{code, response};
use tributary_sasl::ScramHash;

use super::{Conn, Outcome};
use crate::scram::ScramLogin;

/// The mechanisms offered, in the order SaslHandshake lists them.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "SCRAM-SHA-256"];

/// Where a connection is in its SASL exchange.
#[derive(Default)]
pub enum SaslState {
    /// No handshake yet.
    #[default]
    Idle,
    /// PLAIN chosen.
    Plain,
    /// SCRAM-SHA-256 chosen, client-first not yet seen.
    ScramStart,
    /// Between server-first and client-final.
    ScramFinal(Box<ScramLogin>),
    /// Authenticated.
    Done,
}

impl Conn {
    pub(super) fn sasl_handshake(&mut self, mechanism: &str) -> Outcome {
        let mut out = BytesMut::new();
        let next = match mechanism {
            "PLAIN" => Some(SaslState::Plain),
            "SCRAM-SHA-256" => Some(SaslState::ScramStart),
            _ => None,
        };
        match next {
            Some(s) if matches!(self.sasl, SaslState::Idle) => {
                self.sasl = s;
                response::sasl_handshake(code::NONE, &MECHANISMS, &mut out);
                Outcome::Reply(out)
            }
            Some(_) => {
                response::sasl_handshake(code::ILLEGAL_SASL_STATE, &MECHANISMS, &mut out);
                Outcome::ReplyAndClose(out)
            }
            None => {
                response::sasl_handshake(code::UNSUPPORTED_SASL_MECHANISM, &MECHANISMS, &mut out);
                Outcome::ReplyAndClose(out)
            }
        }
    }

    async fn refuse(&mut self, version: i16, user: &str, detail: &str) -> Outcome {
        tracing::info!(peer = %self.peer, user, detail, "Kafka SASL login refused");
        tokio::time::sleep(self.ctx.auth_failure_delay).await;
        let mut out = BytesMut::new();
        response::sasl_authenticate(
            version,
            code::SASL_AUTHENTICATION_FAILED,
            Some("Authentication failed: invalid credentials"),
            &[],
            &mut out,
        );
        Outcome::ReplyAndClose(out)
    }

    pub(super) async fn sasl_authenticate(&mut self, version: i16, data: Bytes) -> Outcome {
        let mut out = BytesMut::new();
        let users = self.ctx.users.clone();
        match std::mem::take(&mut self.sasl) {
            SaslState::Plain => {
                let mut parts = data.split(|b| *b == 0);
                let (_authzid, user, pass) = (parts.next(), parts.next(), parts.next());
                let (Some(user), Some(pass)) = (user, pass) else {
                    return self.refuse(version, "", "malformed PLAIN message").await;
                };
                let user = String::from_utf8_lossy(user).into_owned();
                let pass = String::from_utf8_lossy(pass).into_owned();
                match users.authenticate(&user, &pass, self.peer.ip()) {
                    Ok(_) => {
                        tracing::debug!(peer = %self.peer, user, "Kafka SASL PLAIN login");
                        self.user = Some(user);
                        self.sasl = SaslState::Done;
                        response::sasl_authenticate(version, code::NONE, None, &[], &mut out);
                        Outcome::Reply(out)
                    }
                    Err(e) => self.refuse(version, &user, &e.to_string()).await,
                }
            }
            SaslState::ScramStart => match ScramLogin::start(&users, ScramHash::Sha256, &data) {
                Ok((login, server_first)) => {
                    self.sasl = SaslState::ScramFinal(Box::new(login));
                    response::sasl_authenticate(version, code::NONE, None, &server_first, &mut out);
                    Outcome::Reply(out)
                }
                Err(r) => self.refuse(version, &r.user, &r.detail).await,
            },
            SaslState::ScramFinal(login) => match login.finish(&users, self.peer.ip(), &data) {
                Ok((user, server_final)) => {
                    tracing::debug!(peer = %self.peer, user, "Kafka SASL SCRAM-SHA-256 login");
                    self.user = Some(user);
                    self.sasl = SaslState::Done;
                    response::sasl_authenticate(version, code::NONE, None, &server_final, &mut out);
                    Outcome::Reply(out)
                }
                Err(r) => self.refuse(version, &r.user, &r.detail).await,
            },
            other => {
                self.sasl = other;
                response::sasl_authenticate(
                    version,
                    code::ILLEGAL_SASL_STATE,
                    Some("SaslAuthenticate without a SaslHandshake"),
                    &[],
                    &mut out,
                );
                Outcome::ReplyAndClose(out)
            }
        }
    }
}
