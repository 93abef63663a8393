//! EXTERNAL (RFC 4422 Appendix A): the client was authenticated outside
//! SASL, by the transport (a verified TLS client certificate), and the
//! mechanism's only message is an optional authorization identity.

use crate::{MAX_MESSAGE_LEN, SaslError};

/// A decoded EXTERNAL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// Who the transport says the client is (the certificate's user name).
    pub identity: String,
    /// The identity the client asked to act as; `None` when it sent none
    /// (an empty response), which means `identity` itself.
    pub authzid: Option<String>,
}

/// Decodes the client's EXTERNAL response on a connection whose transport
/// authenticated the client as `identity` (`None`: it did not, and
/// EXTERNAL fails with [`SaslError::NotAuthorized`]). Whether `authzid` may
/// be used is the caller's policy, as with [`crate::parse_plain`].
pub fn parse_external(response: &[u8], identity: Option<&str>) -> Result<External, SaslError> {
    let identity = match identity {
        Some(identity) if !identity.is_empty() => identity,
        _ => return Err(SaslError::NotAuthorized),
    };
    if response.len() > MAX_MESSAGE_LEN {
        return Err(SaslError::malformed("EXTERNAL response too long"));
    }
    let authzid = std::str::from_utf8(response)
        .map_err(|_| SaslError::malformed("EXTERNAL authorization identity is not UTF-8"))?;
    if authzid.contains('\0') {
        return Err(SaslError::malformed(
            "EXTERNAL authorization identity contains NUL",
        ));
    }
    Ok(External {
        identity: identity.to_owned(),
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_response_is_the_transport_identity() {
        assert_eq!(
            parse_external(b"", Some("alice")),
            Ok(External {
                identity: "alice".into(),
                authzid: None
            })
        );
    }

    #[test]
    fn authzid_is_returned_for_the_caller_to_judge() {
        let e = parse_external(b"alice@example.com", Some("alice")).unwrap();
        assert_eq!(e.authzid.as_deref(), Some("alice@example.com"));
    }

    #[test]
    fn no_certificate_no_login() {
        assert_eq!(parse_external(b"", None), Err(SaslError::NotAuthorized));
        assert_eq!(parse_external(b"", Some("")), Err(SaslError::NotAuthorized));
    }

    #[test]
    fn malformed_responses() {
        for bad in [
            &b"a\0b"[..],
            &[0xff, 0xfe][..],
            &vec![b'a'; MAX_MESSAGE_LEN + 1][..],
        ] {
            assert!(matches!(
                parse_external(bad, Some("alice")),
                Err(SaslError::MalformedRequest(_))
            ));
        }
    }
}
