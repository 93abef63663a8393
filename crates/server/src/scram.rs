//! SCRAM logins (RFC 5802, RFC 7677) for the protocols whose own framing carries the SASL
//! messages: AMQP 0-9-1 (`connection.secure` rounds) and MQTT 5 (enhanced authentication).
//! XMPP runs the same `tributary_sasl::ScramServer` inside its c2s machine.
//!
//! An unknown user, or one whose account has no SCRAM keys (a password hash imported from
//! RabbitMQ definitions), gets deterministic fake keys: the exchange looks the same as for a real
//! account, and fails at the proof.

use std::net::IpAddr;
use std::sync::OnceLock;

use tributary_sasl::{ChannelBindings, ScramCredentials, ScramHash, ScramServer};

use crate::users::{AuthError, UserDb};

/// The per-process secret fake SCRAM salts derive from, shared by every protocol so that an
/// unknown user's salt is the same on AMQP, MQTT and XMPP (a difference would tell real
/// accounts from unknown ones).
pub fn fake_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret
    })
}

/// Why a SCRAM login failed: who tried (for the log), the refusal, and a detail for the log
/// only (never sent to the client).
#[derive(Debug)]
pub struct Refusal {
    /// The user name from client-first-message (empty when it did not parse).
    pub user: String,
    /// What the protocol is told.
    pub error: AuthError,
    /// What went wrong, for the log.
    pub detail: String,
}

/// One SCRAM login between client-first-message and client-final-message.
pub struct ScramLogin {
    server: ScramServer,
    user: String,
    /// Whether `user` exists and has keys for this hash (else the keys are fake).
    known: bool,
}

impl ScramLogin {
    /// Reads client-first-message and looks the user up; returns the exchange and
    /// server-first-message to send.
    pub fn start(
        users: &UserDb,
        hash: ScramHash,
        client_first: &[u8],
    ) -> Result<(ScramLogin, Vec<u8>), Refusal> {
        let mut server = ScramServer::new(hash, false, ChannelBindings::default());
        let first = server.client_first(client_first).map_err(|e| Refusal {
            user: String::new(),
            error: AuthError::InvalidCredentials,
            detail: e.to_string(),
        })?;
        if first.authzid.as_ref().is_some_and(|a| *a != first.username) {
            return Err(Refusal {
                user: first.username,
                error: AuthError::InvalidCredentials,
                detail: "authorization identity differs from the user".into(),
            });
        }
        let (credentials, known) = match users.scram_credentials(&first.username, hash) {
            Some(c) => (c, true),
            None => (
                ScramCredentials::fake(hash, &first.username, fake_secret()),
                false,
            ),
        };
        let server_first = server.server_first(credentials);
        Ok((
            ScramLogin {
                server,
                user: first.username,
                known,
            },
            server_first,
        ))
    }

    /// The user name client-first-message named.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Verifies client-final-message; on success returns the user and server-final-message
    /// (`v=...`), which the client checks to authenticate the server.
    pub fn finish(
        mut self,
        users: &UserDb,
        peer: IpAddr,
        client_final: &[u8],
    ) -> Result<(String, Vec<u8>), Refusal> {
        let refusal = |user: String, error, detail: &str| Refusal {
            user,
            error,
            detail: detail.to_owned(),
        };
        // Verified in any case, so an unknown user costs the same time as a wrong password.
        let verified = self.server.client_final(client_final);
        if !self.known {
            let detail = if users.exists(&self.user) {
                "the account has no SCRAM keys (set its password again to add them)"
            } else {
                "unknown user"
            };
            return Err(refusal(self.user, AuthError::InvalidCredentials, detail));
        }
        let server_final = match verified {
            Ok(v) => v,
            Err(e) => {
                let detail = e.to_string();
                return Err(refusal(self.user, AuthError::InvalidCredentials, &detail));
            }
        };
        if !users.may_connect_from(&self.user, peer) {
            return Err(refusal(
                self.user,
                AuthError::LoopbackOnly,
                "loopback-only user",
            ));
        }
        Ok((self.user, server_final))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_secret_is_stable_within_a_process() {
        assert_eq!(fake_secret(), fake_secret());
        assert_ne!(fake_secret(), &[0u8; 32]);
    }
}
