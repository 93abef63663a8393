//! SCRAM server: RFC test vectors, channel binding, downgrade detection, malformed input.

mod common;

use common::{Client, b64};
use tributary_sasl::*;

const SHA1_SALT: &[u8] = b"\x41\x25\xc2\x47\xe4\x3a\xb1\xe9\x3c\x6d\xff\x76";
const SHA256_SALT: &[u8] = b"\x5b\x6d\x99\x68\x9d\x12\x35\x8e\xec\xa0\x4b\x14\x12\x36\xfa\x81";
const EXPORTER: [u8; 32] = [7; 32];

fn none() -> ChannelBindings {
    ChannelBindings::default()
}

fn both() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(EXPORTER.to_vec()),
        tls_server_end_point: Some(vec![9; 32]),
    }
}

fn creds(hash: ScramHash, password: &str) -> ScramCredentials {
    ScramCredentials::derive(hash, password, b"salt of the earth", 64).unwrap()
}

/// Runs a full exchange with `client` against a server configured with `plus`/`bindings` and
/// credentials for `password`; returns the final result.
fn exchange(
    client: &Client,
    plus: bool,
    bindings: ChannelBindings,
    password: &str,
) -> Result<Vec<u8>, SaslError> {
    let mut server = ScramServer::new(client.hash, plus, bindings);
    server.client_first(client.first().as_bytes())?;
    let server_first = server.server_first(creds(client.hash, password));
    let fin = client.finish(&server_first);
    let result = server.client_final(fin.message.as_bytes());
    if let Ok(v) = &result {
        assert_eq!(v, fin.server_signature.as_bytes());
    }
    result
}

fn first_error(plus: bool, bindings: ChannelBindings, message: &str) -> SaslError {
    ScramServer::new(ScramHash::Sha256, plus, bindings)
        .client_first(message.as_bytes())
        .unwrap_err()
}

#[test]
fn rfc_5802_sha1_vector() {
    let mut server =
        ScramServer::with_nonce(ScramHash::Sha1, false, none(), "3rfcNHYJY1ZVvWVs7j".into());
    let first = server
        .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap();
    assert_eq!(
        first,
        ClientFirst {
            username: "user".into(),
            authzid: None
        }
    );
    let creds = ScramCredentials::derive(ScramHash::Sha1, "pencil", SHA1_SALT, 4096).unwrap();
    assert_eq!(
        server.server_first(creds),
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    );
    let fin = server
        .client_final(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        )
        .unwrap();
    assert_eq!(fin, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

#[test]
fn rfc_7677_sha256_vector() {
    let mut server = ScramServer::with_nonce(
        ScramHash::Sha256,
        false,
        none(),
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
    );
    let first = server
        .client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        .unwrap();
    assert_eq!(first.username, "user");
    let creds = ScramCredentials::derive(ScramHash::Sha256, "pencil", SHA256_SALT, 4096).unwrap();
    assert_eq!(
        server.server_first(creds),
        &b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
            [..]
    );
    let fin = server
        .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .unwrap();
    assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

#[test]
fn independent_client_matches_the_rfc_vector() {
    let client = Client::new(ScramHash::Sha1, "user", "pencil");
    let fin =
        client.finish(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
    assert_eq!(
        fin.message,
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    );
    assert_eq!(fin.server_signature, "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

#[test]
fn bad_proof_is_refused_and_ends_the_exchange() {
    let mut server =
        ScramServer::with_nonce(ScramHash::Sha1, false, none(), "3rfcNHYJY1ZVvWVs7j".into());
    server
        .client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
        .unwrap();
    server.server_first(
        ScramCredentials::derive(ScramHash::Sha1, "pencil", SHA1_SALT, 4096).unwrap(),
    );
    // One proof bit flipped.
    let bad = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v1X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    let err = server.client_final(bad).unwrap_err();
    assert_eq!(err, SaslError::NotAuthorized);
    assert_eq!(err.condition(), "not-authorized");
    let good =
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    assert_eq!(server.client_final(good), Err(SaslError::OutOfOrder));
}

#[test]
fn wrong_password_is_refused() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let client = Client::new(hash, "user", "pencil");
        assert!(exchange(&client, false, none(), "pencil").is_ok());
        assert_eq!(
            exchange(&client, false, none(), "pencii"),
            Err(SaslError::NotAuthorized)
        );
    }
}

#[test]
fn channel_binding_plus_round_trips() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let client = Client::new(hash, "user", "pencil").plus("tls-exporter", &EXPORTER);
        assert!(exchange(&client, true, both(), "pencil").is_ok());
        let client = Client::new(hash, "user", "pencil").plus("tls-server-end-point", &[9; 32]);
        assert!(exchange(&client, true, both(), "pencil").is_ok());
        let only_exporter = ChannelBindings {
            tls_exporter: Some(EXPORTER.to_vec()),
            tls_server_end_point: None,
        };
        let client = Client::new(hash, "user", "pencil").plus("tls-exporter", &EXPORTER);
        assert!(exchange(&client, true, only_exporter, "pencil").is_ok());
    }
}

#[test]
fn channel_binding_data_mismatch_is_refused() {
    // A man in the middle has a different TLS session, so a different exporter value.
    let client = Client::new(ScramHash::Sha256, "user", "pencil").plus("tls-exporter", &[8; 32]);
    let err = exchange(&client, true, both(), "pencil").unwrap_err();
    assert_eq!(err, SaslError::ChannelBindingMismatch);
    assert_eq!(err.condition(), "not-authorized");
}

#[test]
fn gs2_header_changed_between_messages_is_refused() {
    // Client-first says "n", client-final hashes "y,,".
    let mut server = ScramServer::with_nonce(ScramHash::Sha256, false, none(), "s".into());
    server.client_first(b"n,,n=user,r=c").unwrap();
    server.server_first(creds(ScramHash::Sha256, "pencil"));
    assert_eq!(
        server.client_final(format!("c={},r=cs,p={}", b64(b"y,,"), b64(&[0; 32])).as_bytes()),
        Err(SaslError::ChannelBindingMismatch)
    );
    // And the authzid is part of the header too.
    let mut server = ScramServer::with_nonce(ScramHash::Sha256, false, none(), "s".into());
    server.client_first(b"n,a=admin,n=user,r=c").unwrap();
    server.server_first(creds(ScramHash::Sha256, "pencil"));
    assert_eq!(
        server.client_final(format!("c=biws,r=cs,p={}", b64(&[0; 32])).as_bytes()),
        Err(SaslError::ChannelBindingMismatch)
    );
}

#[test]
fn unsupported_channel_binding_type() {
    let err = first_error(true, both(), "p=tls-unique,,n=user,r=abc");
    assert_eq!(err, SaslError::ChannelBindingUnsupported);
    assert_eq!(err.condition(), "not-authorized");
    let only_endpoint = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(vec![1]),
    };
    assert_eq!(
        first_error(true, only_endpoint, "p=tls-exporter,,n=user,r=abc"),
        SaslError::ChannelBindingUnsupported
    );
}

#[test]
fn downgrade_is_detected() {
    // "y": the client supports channel binding but believes we do not. We do: someone stripped
    // the -PLUS mechanisms from our advertisement.
    let err = first_error(false, both(), "y,,n=user,r=abc");
    assert_eq!(err, SaslError::ChannelBindingUnsupported);
    assert_eq!(err.condition(), "not-authorized");
    // Without bindings to offer (plain TCP), "y" is honest and the exchange works.
    let mut client = Client::new(ScramHash::Sha256, "user", "pencil");
    client.gs2_header = "y,,".into();
    assert!(exchange(&client, false, none(), "pencil").is_ok());
    // "n" is fine either way.
    let client = Client::new(ScramHash::Sha256, "user", "pencil");
    assert!(exchange(&client, false, both(), "pencil").is_ok());
}

#[test]
fn plus_flag_must_match_mechanism() {
    for msg in ["n,,n=user,r=abc", "y,,n=user,r=abc"] {
        assert!(matches!(
            first_error(true, both(), msg),
            SaslError::MalformedRequest(_)
        ));
    }
    assert!(matches!(
        first_error(false, both(), "p=tls-exporter,,n=user,r=abc"),
        SaslError::MalformedRequest(_)
    ));
}

#[test]
fn authzid_and_escaped_usernames() {
    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    let first = server
        .client_first(b"n,a=adm=3Din=2Cx,n=us=2Cer=3D,r=abc")
        .unwrap();
    assert_eq!(first.username, "us,er=");
    assert_eq!(first.authzid.as_deref(), Some("adm=in,x"));
    // SASLprep is applied to the username: soft hyphen maps to nothing.
    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    let first = server
        .client_first("n,,n=us\u{ad}er,r=abc".as_bytes())
        .unwrap();
    assert_eq!(first.username, "user");
    // And a full exchange with , and = in the name.
    let client = Client::new(ScramHash::Sha1, "a,b=c", "pencil");
    assert!(exchange(&client, false, none(), "pencil").is_ok());
}

#[test]
fn extensions_after_the_nonce_are_ignored() {
    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    assert!(server.client_first(b"n,,n=user,r=abc,x=whatever").is_ok());
}

#[test]
fn malformed_client_first() {
    for msg in [
        &b""[..],
        b"n",
        b"n,",
        b"n,,",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"p=tls unique,,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,a=x=41,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=user",
        b"n,,n=,r=abc",
        b"n,,n=us=2cer,r=abc",
        b"n,,n=us=41er,r=abc",
        b"n,,n=user=,r=abc",
        b"n,,n=\xad,r=abc",
        "n,,n=\u{ad},r=abc".as_bytes(),
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=\xc3\xa9",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,p=x",
        b"n,,n=us\xffer,r=abc",
        b"n,,n=us\0er,r=abc",
        b"n,,n=\x07,r=abc",
        b"F,n,,n=user,r=abc",
    ] {
        let err = ScramServer::new(ScramHash::Sha1, false, none())
            .client_first(msg)
            .unwrap_err();
        assert!(
            matches!(err, SaslError::MalformedRequest(_)),
            "{msg:?}: {err:?}"
        );
        assert_eq!(err.condition(), "malformed-request");
    }
    let long = format!("n,,n={},r=abc", "u".repeat(MAX_MESSAGE_LEN));
    assert!(matches!(
        first_error(false, none(), &long),
        SaslError::MalformedRequest(_)
    ));
}

#[test]
fn malformed_client_final() {
    let proof = b64(&[0; 32]);
    for msg in [
        String::new(),
        "c=biws,r=abcsrv".into(),
        format!("r=abcsrv,c=biws,p={proof}"),
        format!("c=biws,p={proof}"),
        format!("c=bi!s,r=abcsrv,p={proof}"),
        format!("c=biws,r=abcsrv,p={proof}x"),
        "c=biws,r=abcsrv,p=AAAA".into(),
        format!("c=biws,r=abcsrv,e=1,p={proof}"),
        format!("c=biws,r=abcsrv,p={proof},x=1"),
        format!("c=biws,r=abcsrv,p={}", &proof[..proof.len() - 1]),
    ] {
        let mut server = ScramServer::with_nonce(ScramHash::Sha256, false, none(), "srv".into());
        server.client_first(b"n,,n=user,r=abc").unwrap();
        server.server_first(creds(ScramHash::Sha256, "pencil"));
        let err = server.client_final(msg.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SaslError::MalformedRequest(_)),
            "{msg:?}: {err:?}"
        );
    }
}

#[test]
fn nonce_must_be_the_combined_one() {
    let client = Client::new(ScramHash::Sha256, "user", "pencil");
    for nonce in [
        "fyko+d2lbbFgONRv9qkxdawL",
        "fyko+d2lbbFgONRv9qkxdawLsrvX",
        "other",
    ] {
        let mut server = ScramServer::with_nonce(ScramHash::Sha256, false, none(), "srv".into());
        server.client_first(client.first().as_bytes()).unwrap();
        server.server_first(creds(ScramHash::Sha256, "pencil"));
        let msg = format!("c=biws,r={nonce},p={}", b64(&[0; 32]));
        assert_eq!(
            server.client_final(msg.as_bytes()),
            Err(SaslError::NotAuthorized),
            "{nonce}"
        );
    }
}

#[test]
fn calls_out_of_order() {
    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    assert_eq!(
        server.client_final(b"c=biws,r=a,p=AA=="),
        Err(SaslError::OutOfOrder)
    );
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslError::OutOfOrder)
    );

    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    assert!(
        server
            .server_first(creds(ScramHash::Sha256, "p"))
            .is_empty()
    );
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslError::OutOfOrder)
    );

    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    server.client_first(b"n,,n=user,r=abc").unwrap();
    assert_eq!(
        server.client_final(b"c=biws,r=a,p=AA=="),
        Err(SaslError::OutOfOrder)
    );
    assert!(
        server
            .server_first(creds(ScramHash::Sha256, "p"))
            .is_empty()
    );

    // A failed client_first ends the exchange.
    let mut server = ScramServer::new(ScramHash::Sha256, false, none());
    assert!(server.client_first(b"garbage").is_err());
    assert!(
        server
            .server_first(creds(ScramHash::Sha256, "p"))
            .is_empty()
    );
    assert_eq!(SaslError::OutOfOrder.condition(), "malformed-request");
}

#[test]
fn fake_credentials_look_real_and_never_verify() {
    let secret = b"server secret";
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let a = ScramCredentials::fake(hash, "ghost", secret);
        assert_eq!(a, ScramCredentials::fake(hash, "ghost", secret));
        assert_ne!(a, ScramCredentials::fake(hash, "ghost2", secret));
        assert_ne!(a.salt, ScramCredentials::fake(hash, "ghost", b"other").salt);
        assert_eq!(a.salt.len(), SALT_LEN);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_eq!(a.stored_key.len(), hash.output_len());
        assert_eq!(a.server_key.len(), hash.output_len());
        assert_ne!(a.stored_key, a.server_key);

        let client = Client::new(hash, "ghost", "pencil");
        let mut server = ScramServer::new(hash, false, none());
        server.client_first(client.first().as_bytes()).unwrap();
        let sf = server.server_first(a.clone());
        assert!(String::from_utf8(sf.clone()).unwrap().ends_with(",i=4096"));
        let fin = client.finish(&sf);
        assert_eq!(
            server.client_final(fin.message.as_bytes()),
            Err(SaslError::NotAuthorized)
        );
    }
}

#[test]
fn generate_uses_fresh_salts() {
    let a = ScramCredentials::generate(ScramHash::Sha256, "pencil").unwrap();
    let b = ScramCredentials::generate(ScramHash::Sha256, "pencil").unwrap();
    assert_eq!(a.salt.len(), SALT_LEN);
    assert_eq!(a.iterations, DEFAULT_ITERATIONS);
    assert!(a.iterations >= 4096);
    assert_ne!(a.salt, b.salt);
    assert_ne!(a.stored_key, b.stored_key);
    assert_eq!(
        a,
        ScramCredentials::derive(ScramHash::Sha256, "pencil", &a.salt, a.iterations).unwrap()
    );
}

#[test]
fn derive_applies_saslprep() {
    // RFC 4013 §3 examples: soft hyphen maps to nothing, U+00AA to "a" under NFKC.
    assert_eq!(
        creds(ScramHash::Sha1, "I\u{ad}X"),
        creds(ScramHash::Sha1, "IX")
    );
    assert_eq!(
        creds(ScramHash::Sha1, "\u{aa}"),
        creds(ScramHash::Sha1, "a")
    );
    for bad in ["", "\u{7}", "\u{ad}", "\u{627}1"] {
        assert_eq!(
            ScramCredentials::derive(ScramHash::Sha256, bad, b"s", 1),
            Err(SaslError::InvalidPassword),
            "{bad:?}"
        );
    }
    assert_eq!(SaslError::InvalidPassword.condition(), "not-authorized");
    assert!(matches!(
        ScramCredentials::derive(ScramHash::Sha256, "pencil", b"s", 0),
        Err(SaslError::MalformedRequest(_))
    ));
    // A client that prepared its password the same way gets in.
    let mut client = Client::new(ScramHash::Sha256, "user", "IX");
    client.password = "I\u{ad}X".into();
    assert!(exchange(&client, false, none(), "IX").is_ok());
}

#[test]
fn binding_types_and_names() {
    assert!(none().types().is_empty());
    assert_eq!(both().types(), ["tls-exporter", "tls-server-end-point"]);
    let endpoint = ChannelBindings {
        tls_server_end_point: Some(vec![1]),
        ..Default::default()
    };
    assert_eq!(endpoint.types(), ["tls-server-end-point"]);
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        for plus in [false, true] {
            assert_eq!(
                ScramHash::from_mechanism(hash.mechanism(plus)),
                Some((hash, plus))
            );
        }
    }
    assert_eq!(ScramHash::Sha256.mechanism(true), "SCRAM-SHA-256-PLUS");
    assert_eq!(ScramHash::from_mechanism("scram-sha-1"), None);
    assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
}
