//! Property tests: no input panics the parsers, and a correct client always gets in.

mod common;

use common::{Client, b64};
use proptest::prelude::*;
use tributary_sasl::*;

fn hash() -> impl Strategy<Value = ScramHash> {
    prop_oneof![Just(ScramHash::Sha1), Just(ScramHash::Sha256)]
}

fn bindings() -> impl Strategy<Value = ChannelBindings> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
    )
        .prop_map(|(tls_exporter, tls_server_end_point)| ChannelBindings {
            tls_exporter,
            tls_server_end_point,
        })
}

/// Byte strings that are mostly SCRAM-shaped, so the parsers get past their first checks.
fn scramish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "(n|y|p=tls-exporter|p=tls-unique|p=)?,(a=[a-z=23CD]{0,5})?,(m=x,)?n=[a-z=,23CD\u{ad}]{0,8},r=[ -~]{0,10}(,[a-z]=[a-z]{0,3})?"
            .prop_map(String::into_bytes),
        "c=[A-Za-z0-9+/=]{0,12},r=[ -~]{0,12},p=[A-Za-z0-9+/=]{0,48}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn client_first_never_panics(
        hash in hash(), plus in any::<bool>(), bindings in bindings(), msg in scramish()
    ) {
        let mut server = ScramServer::new(hash, plus, bindings);
        if let Err(e) = server.client_first(&msg) {
            let _ = e.condition();
            prop_assert_eq!(server.client_final(&msg), Err(SaslError::OutOfOrder));
        }
    }

    #[test]
    fn client_final_never_panics(
        hash in hash(), plus in any::<bool>(), msg in scramish(), valid_nonce in any::<bool>()
    ) {
        let bindings = ChannelBindings { tls_exporter: Some(vec![1; 32]), tls_server_end_point: None };
        let mut server = ScramServer::with_nonce(hash, plus, bindings, "srv".into());
        let first: &[u8] = if plus { b"p=tls-exporter,,n=user,r=cli" } else { b"n,,n=user,r=cli" };
        server.client_first(first).unwrap();
        server.server_first(ScramCredentials::fake(hash, "user", b"k"));
        let msg = if valid_nonce {
            // The right binding and nonce, so the proof check runs on arbitrary proofs (most of
            // the right length).
            let mut proof = msg.clone();
            if msg.len() % 4 != 0 {
                proof.resize(hash.output_len(), 0);
            }
            let cbind: &[u8] = if plus { &[b"p=tls-exporter,,".as_slice(), &[1; 32]].concat() } else { b"n,," };
            format!("c={},r=clisrv,p={}", b64(cbind), b64(&proof)).into_bytes()
        } else {
            msg
        };
        match server.client_final(&msg) {
            Ok(_) => prop_assert!(false, "fake credentials verified"),
            Err(e) => { let _ = e.condition(); }
        }
    }

    #[test]
    fn parse_plain_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = parse_plain(&msg) {
            prop_assert!(!p.username.is_empty() && !p.password.is_empty());
            let mut again = p.authzid.clone().unwrap_or_default().into_bytes();
            again.push(0);
            again.extend_from_slice(p.username.as_bytes());
            again.push(0);
            again.extend_from_slice(p.password.as_bytes());
            prop_assert_eq!(again, msg);
        }
    }

    #[test]
    fn correct_client_always_succeeds(
        hash in hash(),
        username in "[a-zA-Z0-9,= é\u{ad}]{0,10}[a-z,=]",
        password in "[ -~é\u{ad}]{0,16}[!-~]",
        salt in proptest::collection::vec(any::<u8>(), 0..24),
        iterations in 1u32..16,
        client_nonce in "[!-+\\--~]{1,24}",
        server_nonce in "[!-+\\--~]{1,24}",
        cb in 0..4u8,
        cb_data in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut bindings = ChannelBindings::default();
        let mut client = Client::new(hash, &username, &password);
        client.client_nonce = client_nonce;
        let plus = match cb {
            0 => false,
            1 => { client.gs2_header = "y,,".into(); false }
            2 => {
                bindings.tls_exporter = Some(cb_data.clone());
                client = client.plus("tls-exporter", &cb_data);
                true
            }
            _ => {
                bindings.tls_server_end_point = Some(cb_data.clone());
                bindings.tls_exporter = Some(vec![0; 32]);
                client = client.plus("tls-server-end-point", &cb_data);
                true
            }
        };
        let creds = ScramCredentials::derive(hash, &password, &salt, iterations).unwrap();
        let mut server = ScramServer::with_nonce(hash, plus, bindings, server_nonce);
        let first = server.client_first(client.first().as_bytes()).unwrap();
        prop_assert_eq!(first.username, stringprep::saslprep(&username).unwrap().into_owned());
        prop_assert_eq!(first.authzid, None);
        let server_first = server.server_first(creds);
        let fin = client.finish(&server_first);
        let server_final = server.client_final(fin.message.as_bytes()).unwrap();
        prop_assert_eq!(server_final, fin.server_signature.into_bytes());
    }
}
