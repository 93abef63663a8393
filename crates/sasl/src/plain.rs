//! PLAIN (RFC 4616).

use std::fmt;

use crate::{MAX_MESSAGE_LEN, SaslError};

/// A PLAIN (RFC 4616) message, split into its parts: the one mechanism every AMQP and MQTT
/// client supports. The caller verifies the password (after SASLprep, if it compares strings).
#[derive(Clone, PartialEq, Eq)]
pub struct Plain {
    /// Identity to act as, if the client asked for one other than `username` (empty means none).
    pub authzid: Option<String>,
    /// Authentication identity (`authcid`), never empty.
    pub username: String,
    /// The password, never empty.
    pub password: String,
}

/// Keeps the password out of logs.
impl fmt::Debug for Plain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plain")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a PLAIN message, `[authzid] NUL authcid NUL passwd`, with every part UTF-8 and the
/// identity and password non-empty, so protocols share one strict parser.
pub fn parse_plain(message: &[u8]) -> Result<Plain, SaslError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(SaslError::malformed("PLAIN message too long"));
    }
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::malformed(
            "PLAIN needs exactly two NUL separators",
        ));
    };
    let text = |bytes: &[u8], what: &str| {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SaslError::malformed(format!("PLAIN {what} is not UTF-8")))
    };
    if username.is_empty() || password.is_empty() {
        return Err(SaslError::malformed("PLAIN identity or password empty"));
    }
    Ok(Plain {
        authzid: if authzid.is_empty() {
            None
        } else {
            Some(text(authzid, "authzid")?)
        },
        username: text(username, "authcid")?,
        password: text(password, "password")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_4616_examples() {
        let p = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!(p.authzid, None);
        assert_eq!(p.username, "tim");
        assert_eq!(p.password, "tanstaaftanstaaf");
        let p = parse_plain(b"Ursel\0Kurt\0xipj3plmq").unwrap();
        assert_eq!(p.authzid.as_deref(), Some("Ursel"));
        assert_eq!(p.username, "Kurt");
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            &b""[..],
            b"\0user",
            b"\0\0pw",
            b"\0user\0",
            b"a\0b\0c\0d",
            b"\0us\xffer\0pw",
            b"\0user\0p\xc3",
        ] {
            assert!(
                matches!(parse_plain(bad), Err(SaslError::MalformedRequest(_))),
                "{bad:?}"
            );
        }
        assert!(parse_plain(&vec![b'a'; MAX_MESSAGE_LEN + 1]).is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let p = parse_plain(b"\0tim\0secret").unwrap();
        assert!(!format!("{p:?}").contains("secret"));
    }
}
