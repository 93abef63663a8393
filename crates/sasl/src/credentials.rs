//! Stored SCRAM keys and how to derive them.

use crate::crypto::{digest, hmac, random, salted_password};
use crate::{SaslError, ScramHash};

/// Iteration count [`ScramCredentials::generate`] uses (and fake credentials advertise): the
/// minimum RFC 7677 §4 asks for, and what RabbitMQ, ejabberd and Prosody use by default.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Length of the random salt [`ScramCredentials::generate`] picks (and of fake salts), 128 bits.
pub const SALT_LEN: usize = 16;

/// Stored SCRAM keys for one hash (RFC 5802 §3): what the user database keeps instead of the
/// password. Enough to verify a client and to prove the server knows the password, but not
/// enough to impersonate the user to this or any other server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The per-user salt sent to the client in server-first-message.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count sent to the client in server-first-message.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`: verifies the client proof.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: signs server-final-message.
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// Derives keys from a password, so a user database can be filled from a configured or
    /// newly set password. SASLprep (RFC 4013, stored-string rules) is applied first, as every
    /// client does before hashing.
    ///
    /// Errors: [`SaslError::InvalidPassword`] if the password is empty or not valid under
    /// SASLprep; [`SaslError::MalformedRequest`] if `iterations` is zero.
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, SaslError> {
        if iterations == 0 {
            return Err(SaslError::malformed("iteration count must be positive"));
        }
        let prepared = stringprep::saslprep(password).map_err(|_| SaslError::InvalidPassword)?;
        if prepared.is_empty() {
            return Err(SaslError::InvalidPassword);
        }
        let salted = salted_password(hash, prepared.as_bytes(), salt, iterations);
        let client_key = hmac(hash, &salted, &[b"Client Key"]);
        Ok(ScramCredentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: digest(hash, &client_key),
            server_key: hmac(hash, &salted, &[b"Server Key"]),
        })
    }

    /// Derives keys with a fresh random [`SALT_LEN`]-byte salt and [`DEFAULT_ITERATIONS`]: the
    /// normal way to store a new password.
    ///
    /// # Panics
    /// If the operating system has no usable random source.
    pub fn generate(hash: ScramHash, password: &str) -> Result<Self, SaslError> {
        let mut salt = [0u8; SALT_LEN];
        random(&mut salt);
        Self::derive(hash, password, &salt, DEFAULT_ITERATIONS)
    }

    /// Deterministic fake credentials for an unknown user, so the exchange looks the same as for
    /// a real one and a client cannot find out which usernames exist: the same username always
    /// gets the same salt, with [`DEFAULT_ITERATIONS`].
    ///
    /// The salt is `HMAC-SHA-256(server_secret, username)` truncated to [`SALT_LEN`] bytes (the
    /// same for both hashes, like one real password stored for both). The keys are HMACs of the
    /// username under the secret with their own labels: random-looking, and no proof verifies
    /// against them because that would need a preimage of `stored_key` under the hash.
    /// `server_secret` should be random, persistent and private to the server.
    pub fn fake(hash: ScramHash, username: &str, server_secret: &[u8]) -> Self {
        let mut salt = hmac(ScramHash::Sha256, server_secret, &[username.as_bytes()]);
        salt.truncate(SALT_LEN);
        let key = |label: &[u8]| hmac(hash, server_secret, &[label, b"\0", username.as_bytes()]);
        ScramCredentials {
            salt,
            iterations: DEFAULT_ITERATIONS,
            stored_key: key(b"tributary fake SCRAM StoredKey"),
            server_key: key(b"tributary fake SCRAM ServerKey"),
        }
    }
}
