//! Sans-IO SASL server mechanisms shared by every protocol.
//!
//! AMQP (`connection.start-ok`), MQTT 5 (enhanced authentication) and XMPP (RFC 6120 §6) all carry
//! the same SASL mechanisms; this crate implements them once, as plain functions and state machines
//! that turn the client's bytes into the server's bytes. It does no IO, owns no clock and knows
//! nothing about users: the caller looks credentials up between [`ScramServer::client_first`] and
//! [`ScramServer::server_first`], and decides authorization after a successful exchange.
//!
//! * [`parse_plain`]: PLAIN (RFC 4616).
//! * [`parse_external`]: EXTERNAL (RFC 4422 Appendix A), for TLS client certificates.
//! * [`ScramServer`]: SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677), with or without
//!   channel binding (`-PLUS`, `tls-exporter` RFC 9266 and `tls-server-end-point` RFC 5929).
//! * [`ScramCredentials`]: the stored keys a user database keeps instead of passwords.

#![warn(missing_docs)]

mod credentials;
mod crypto;
mod error;
mod external;
pub mod fuzzing;
mod plain;
mod scram;

pub use credentials::{DEFAULT_ITERATIONS, SALT_LEN, ScramCredentials};
pub use error::SaslError;
pub use external::{External, parse_external};
pub use plain::{Plain, parse_plain};
pub use scram::{ChannelBindings, ClientFirst, ScramServer};

/// Upper bound on any single SASL message this crate accepts, so a client cannot make the server
/// buffer, decode or hash unbounded input. Generous enough for PLAIN carrying a token as password.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024;

/// Which hash a SCRAM mechanism uses; it fixes the HMAC, the key lengths and the mechanism name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802): still the only SCRAM many AMQP and XMPP clients speak.
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677): the one to prefer.
    Sha256,
}

impl ScramHash {
    /// Length in bytes of the hash output, and so of `StoredKey`, `ServerKey` and the proof.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// The IANA SASL mechanism name, for advertising mechanisms to clients.
    pub fn mechanism(self, plus: bool) -> &'static str {
        match (self, plus) {
            (ScramHash::Sha1, false) => "SCRAM-SHA-1",
            (ScramHash::Sha1, true) => "SCRAM-SHA-1-PLUS",
            (ScramHash::Sha256, false) => "SCRAM-SHA-256",
            (ScramHash::Sha256, true) => "SCRAM-SHA-256-PLUS",
        }
    }

    /// Maps a mechanism name the client chose back to its hash and `-PLUS` flag (`None` if it is
    /// not a SCRAM mechanism this crate implements). SASL mechanism names are case-sensitive.
    pub fn from_mechanism(name: &str) -> Option<(ScramHash, bool)> {
        match name {
            "SCRAM-SHA-1" => Some((ScramHash::Sha1, false)),
            "SCRAM-SHA-1-PLUS" => Some((ScramHash::Sha1, true)),
            "SCRAM-SHA-256" => Some((ScramHash::Sha256, false)),
            "SCRAM-SHA-256-PLUS" => Some((ScramHash::Sha256, true)),
            _ => None,
        }
    }
}
