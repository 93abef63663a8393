//! The SASL exchange of a client stream (RFC 6120 §6): mechanism choice,
//! base64 framing, and the account lookups the IO layer provides.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tributary_sasl::{
    ChannelBindings, ScramCredentials, ScramHash, ScramServer, parse_external, parse_plain,
};

/// The account lookups SASL needs; the server implements it over its user
/// database.
pub trait Authenticator {
    /// Stored SCRAM keys of an account, if it exists and has them.
    fn scram_credentials(&self, username: &str, hash: ScramHash) -> Option<ScramCredentials>;
    /// Checks a PLAIN password.
    fn check_plain(&self, username: &str, password: &str) -> bool;
    /// Whether the account a verified client certificate names may log in
    /// with SASL EXTERNAL (it exists; no password is checked).
    fn check_external(&self, _username: &str) -> bool {
        false
    }
    /// A server secret for fake SCRAM salts of unknown users, so a login
    /// attempt does not reveal whether an account exists.
    fn secret(&self) -> &[u8];
}

/// An exchange in progress.
pub(crate) enum SaslStep {
    /// The client sent `<auth/>` without an initial response.
    AwaitInitial {
        hash: ScramHash,
        plus: bool,
        bindings: ChannelBindings,
    },
    /// PLAIN without an initial response.
    AwaitPlain,
    /// EXTERNAL without an initial response; the certificate's account.
    AwaitExternal(Option<String>),
    /// Server-first sent; waiting for client-final.
    Scram {
        server: Box<ScramServer>,
        username: String,
        known: bool,
    },
}

/// What one step of the exchange produced.
pub(crate) enum SaslOutcome {
    Challenge(SaslStep, String),
    Success(String, Option<String>),
    Failure(&'static str),
}

fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
    let text = text.trim();
    if text.is_empty() || text == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(text).map_err(|_| "incorrect-encoding")
}

impl SaslStep {
    /// `<auth mechanism=…>` with its (possibly empty) initial response.
    pub(crate) fn start(
        mechanism: &str,
        bindings: &ChannelBindings,
        identity: Option<&str>,
        initial: &str,
        auth: &dyn Authenticator,
    ) -> SaslOutcome {
        let (hash, plus) = match mechanism {
            "EXTERNAL" if initial.trim().is_empty() => {
                // No initial response (not even "="): an empty challenge asks for it.
                let identity = identity.map(str::to_owned);
                return SaslOutcome::Challenge(SaslStep::AwaitExternal(identity), String::new());
            }
            "EXTERNAL" => {
                return match decode(initial) {
                    Ok(data) => external(&data, identity, auth),
                    Err(condition) => SaslOutcome::Failure(condition),
                };
            }
            "PLAIN" => {
                return match decode(initial) {
                    Ok(data) if data.is_empty() => {
                        SaslOutcome::Challenge(SaslStep::AwaitPlain, String::new())
                    }
                    Ok(data) => plain(&data, auth),
                    Err(condition) => SaslOutcome::Failure(condition),
                };
            }
            "SCRAM-SHA-1" => (ScramHash::Sha1, false),
            "SCRAM-SHA-256" => (ScramHash::Sha256, false),
            "SCRAM-SHA-1-PLUS" => (ScramHash::Sha1, true),
            "SCRAM-SHA-256-PLUS" => (ScramHash::Sha256, true),
            _ => return SaslOutcome::Failure("invalid-mechanism"),
        };
        match decode(initial) {
            Ok(data) if data.is_empty() => SaslOutcome::Challenge(
                SaslStep::AwaitInitial {
                    hash,
                    plus,
                    bindings: bindings.clone(),
                },
                String::new(),
            ),
            Ok(data) => scram_first(hash, plus, bindings.clone(), &data, auth),
            Err(condition) => SaslOutcome::Failure(condition),
        }
    }

    /// A `<response/>` from the client.
    pub(crate) fn respond(self, text: &str, auth: &dyn Authenticator) -> SaslOutcome {
        let data = match decode(text) {
            Ok(data) => data,
            Err(condition) => return SaslOutcome::Failure(condition),
        };
        match self {
            SaslStep::AwaitInitial {
                hash,
                plus,
                bindings,
            } => scram_first(hash, plus, bindings, &data, auth),
            SaslStep::AwaitPlain => plain(&data, auth),
            SaslStep::AwaitExternal(identity) => external(&data, identity.as_deref(), auth),
            SaslStep::Scram {
                mut server,
                username,
                known,
            } => match server.client_final(&data) {
                Ok(_) if !known => SaslOutcome::Failure("not-authorized"),
                Ok(server_final) => {
                    SaslOutcome::Success(username, Some(STANDARD.encode(server_final)))
                }
                Err(error) => SaslOutcome::Failure(error.condition()),
            },
        }
    }
}

fn scram_first(
    hash: ScramHash,
    plus: bool,
    bindings: ChannelBindings,
    data: &[u8],
    auth: &dyn Authenticator,
) -> SaslOutcome {
    let mut server = ScramServer::new(hash, plus, bindings);
    let first = match server.client_first(data) {
        Ok(first) => first,
        Err(error) => return SaslOutcome::Failure(error.condition()),
    };
    if first
        .authzid
        .as_deref()
        .is_some_and(|authzid| !authzid_matches(authzid, &first.username))
    {
        return SaslOutcome::Failure("invalid-authzid");
    }
    let (credentials, known) = match auth.scram_credentials(&first.username, hash) {
        Some(credentials) => (credentials, true),
        None => (
            ScramCredentials::fake(hash, &first.username, auth.secret()),
            false,
        ),
    };
    let challenge = STANDARD.encode(server.server_first(credentials));
    SaslOutcome::Challenge(
        SaslStep::Scram {
            server: Box::new(server),
            username: first.username,
            known,
        },
        challenge,
    )
}

fn plain(data: &[u8], auth: &dyn Authenticator) -> SaslOutcome {
    let message = match parse_plain(data) {
        Ok(message) => message,
        Err(error) => return SaslOutcome::Failure(error.condition()),
    };
    if message
        .authzid
        .as_deref()
        .is_some_and(|authzid| !authzid_matches(authzid, &message.username))
    {
        return SaslOutcome::Failure("invalid-authzid");
    }
    if auth.check_plain(&message.username, &message.password) {
        SaslOutcome::Success(message.username, None)
    } else {
        SaslOutcome::Failure("not-authorized")
    }
}

fn external(data: &[u8], identity: Option<&str>, auth: &dyn Authenticator) -> SaslOutcome {
    let external = match parse_external(data, identity) {
        Ok(external) => external,
        Err(error) => return SaslOutcome::Failure(error.condition()),
    };
    if external
        .authzid
        .as_deref()
        .is_some_and(|authzid| !authzid_matches(authzid, &external.identity))
    {
        return SaslOutcome::Failure("invalid-authzid");
    }
    if auth.check_external(&external.identity) {
        SaslOutcome::Success(external.identity, None)
    } else {
        SaslOutcome::Failure("not-authorized")
    }
}

/// An authorization identity is accepted only when it names the
/// authenticated account itself (as a bare JID or a plain name).
fn authzid_matches(authzid: &str, username: &str) -> bool {
    authzid == username
        || authzid
            .split_once('@')
            .is_some_and(|(local, _)| local == username)
}
