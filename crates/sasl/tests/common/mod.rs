//! A minimal SCRAM client written straight from RFC 5802 §3 with the RustCrypto crates, kept
//! independent of the server's code so the two check each other.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tributary_sasl::ScramHash;

pub fn b64(data: &[u8]) -> String {
    BASE64.encode(data)
}

fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => {
            let mut m = Hmac::<Sha1>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        ScramHash::Sha256 => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

fn hi(hash: ScramHash, password: &[u8], salt: &[u8], i: u32) -> Vec<u8> {
    // Written out (not via the pbkdf2 crate) to stay independent of the server's derivation.
    let mut u = hmac(hash, password, &[salt, &1u32.to_be_bytes()].concat());
    let mut out = u.clone();
    for _ in 1..i {
        u = hmac(hash, password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

/// `saslname` escaping: `=` first, then `,`.
pub fn escape(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// One client side of an exchange.
pub struct Client {
    pub hash: ScramHash,
    pub username: String,
    pub password: String,
    pub client_nonce: String,
    /// The GS2 header, trailing comma included.
    pub gs2_header: String,
    /// Channel-binding data the client got from its TLS stack.
    pub cb_data: Vec<u8>,
}

/// What the client computed from server-first-message.
pub struct Final {
    pub message: String,
    pub server_signature: String,
}

impl Client {
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Self {
        Client {
            hash,
            username: username.into(),
            password: password.into(),
            client_nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            gs2_header: "n,,".into(),
            cb_data: Vec::new(),
        }
    }

    pub fn plus(mut self, cb_name: &str, data: &[u8]) -> Self {
        self.gs2_header = format!("p={cb_name},,");
        self.cb_data = data.to_vec();
        self
    }

    pub fn bare(&self) -> String {
        format!("n={},r={}", escape(&self.username), self.client_nonce)
    }

    pub fn first(&self) -> String {
        format!("{}{}", self.gs2_header, self.bare())
    }

    pub fn finish(&self, server_first: &[u8]) -> Final {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for field in server_first.split(',') {
            let (k, v) = field.split_at(2);
            match k {
                "r=" => nonce = v,
                "s=" => salt = BASE64.decode(v).unwrap(),
                "i=" => iterations = v.parse().unwrap(),
                _ => panic!("unexpected {field}"),
            }
        }
        assert!(nonce.starts_with(&self.client_nonce));
        let password = stringprep::saslprep(&self.password).unwrap();
        let salted = hi(self.hash, password.as_bytes(), &salt, iterations);
        let client_key = hmac(self.hash, &salted, b"Client Key");
        let stored_key = h(self.hash, &client_key);
        let cbind = [self.gs2_header.as_bytes(), &self.cb_data].concat();
        let without_proof = format!("c={},r={}", b64(&cbind), nonce);
        let auth = format!("{},{},{}", self.bare(), server_first, without_proof);
        let signature = hmac(self.hash, &stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(self.hash, &salted, b"Server Key");
        Final {
            message: format!("{without_proof},p={}", b64(&proof)),
            server_signature: format!("v={}", b64(&hmac(self.hash, &server_key, auth.as_bytes()))),
        }
    }
}
