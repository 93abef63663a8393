//! CoAP over DTLS 1.2 (`[listeners] coaps`, RFC 7252 §9.1) with pre-shared
//! keys: OpenSSL's DTLS (the `openssl` crate over Debian's libssl) runs one
//! session per peer over an in-memory datagram pipe, so the same
//! [`super::Server`] sees decrypted datagrams and the PSK identity that
//! proved itself, which logs in as the broker user of that name.

use super::{CoapContext, MAX_DATAGRAM, Server, TICK};
use crate::registry::Transport;
use anyhow::Context;
use bytes::Bytes;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVersion,
};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;

/// The path MTU we assume (no IP-level discovery on a custom pipe).
const MTU: u32 = 1280;

/// PSK identities and their keys.
pub type PskKeys = HashMap<String, Vec<u8>>;

/// Reads `identity:key` lines (`#` comments; a key of `0x` and hex digits
/// is binary, any other is its UTF-8 text).
pub fn load_psk_file(path: &Path) -> anyhow::Result<PskKeys> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read coap.psk_file {}", path.display()))?;
    let mut keys = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((identity, key)) = line.split_once(':') else {
            anyhow::bail!("{}:{}: expected identity:key", path.display(), n + 1);
        };
        let key = match key.strip_prefix("0x") {
            Some(hex) => decode_hex(hex)
                .with_context(|| format!("{}:{}: bad hex key", path.display(), n + 1))?,
            None => key.as_bytes().to_vec(),
        };
        if key.is_empty() || key.len() > 64 {
            anyhow::bail!("{}:{}: a key has 1 to 64 bytes", path.display(), n + 1);
        }
        keys.insert(identity.to_string(), key);
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        anyhow::bail!("odd number of hex digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            Ok(u8::from_str_radix(
                s.get(i..i + 2).context("not ASCII")?,
                16,
            )?)
        })
        .collect()
}

/// The DTLS server context: DTLS 1.2 and later, PSK cipher suites.
pub fn context(keys: Arc<PskKeys>) -> anyhow::Result<SslContext> {
    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_options(SslOptions::NO_QUERY_MTU);
    b.set_cipher_list("PSK")?;
    b.set_psk_server_callback(move |_ssl, identity, out| {
        let key = identity
            .and_then(|i| std::str::from_utf8(i).ok())
            .and_then(|i| keys.get(i));
        match key {
            Some(k) if k.len() <= out.len() => {
                out[..k.len()].copy_from_slice(k);
                Ok(k.len())
            }
            // Unknown identity: no key, the handshake fails.
            _ => Ok(0),
        }
    });
    Ok(b.build())
}

/// One peer's side of the in-memory datagram pipe under its DTLS session.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Bytes>,
    outgoing: Vec<Bytes>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(d) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(Bytes::copy_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Session {
    stream: SslStream<Pipe>,
    identity: Option<String>,
    last: Instant,
}

fn wants_more(e: &openssl::ssl::Error) -> bool {
    matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
}

/// Serves CoAP over DTLS on a bound UDP socket until shutdown.
pub async fn run(socket: UdpSocket, ctx: Arc<CoapContext>, tls: SslContext) {
    let transport = Transport {
        local: socket.local_addr().ok(),
        tls: true,
        websocket: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut server = Server::new(ctx.clone(), transport, tx);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut plain = vec![0u8; MAX_DATAGRAM];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = std::time::Duration::from_secs(ctx.config.peer_idle_timeout);
    loop {
        let mut wire: Vec<(SocketAddr, Bytes)> = Vec::new();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    let now = Instant::now();
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    if !sessions.contains_key(&peer) {
                        if sessions.len() >= ctx.config.max_peers {
                            continue;
                        }
                        match Ssl::new(&tls).and_then(|mut ssl| {
                            ssl.set_mtu(MTU)?;
                            SslStream::new(ssl, Pipe::default())
                        }) {
                            Ok(stream) => {
                                sessions.insert(peer, Session { stream, identity: None, last: now });
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot start a DTLS session");
                                continue;
                            }
                        }
                    }
                    let mut drop_session = false;
                    if let Some(s) = sessions.get_mut(&peer) {
                        s.last = now;
                        s.stream.get_mut().incoming.push_back(data);
                        if s.identity.is_none() {
                            match s.stream.accept() {
                                Ok(()) => {
                                    s.identity = s
                                        .stream
                                        .ssl()
                                        .psk_identity()
                                        .map(|i| String::from_utf8_lossy(i).into_owned());
                                    tracing::debug!(%peer, identity = ?s.identity, "DTLS session established");
                                }
                                Err(e) if wants_more(&e) => {}
                                Err(e) => {
                                    tracing::info!(%peer, error = %e, "DTLS handshake failed");
                                    drop_session = true;
                                }
                            }
                        }
                        if let Some(identity) = s.identity.clone() {
                            loop {
                                match s.stream.ssl_read(&mut plain) {
                                    Ok(n) => server.datagram(
                                        peer,
                                        Bytes::copy_from_slice(&plain[..n]),
                                        Some(&identity),
                                        now,
                                    ),
                                    Err(e) if wants_more(&e) => break,
                                    Err(_) => {
                                        drop_session = true;
                                        break;
                                    }
                                }
                            }
                        }
                        wire.extend(s.stream.get_mut().outgoing.drain(..).map(|d| (peer, d)));
                    }
                    if drop_session {
                        sessions.remove(&peer);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "CoAPS receive failed"),
            },
            Some(msg) = rx.recv() => {
                server.inbound(msg, Instant::now());
                while let Ok(msg) = rx.try_recv() {
                    server.inbound(msg, Instant::now());
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                server.tick(now);
                sessions.retain(|_, s| now.duration_since(s.last) < idle);
            }
        }
        for (peer, datagram) in server.drain_transmit() {
            if let Some(s) = sessions.get_mut(&peer)
                && s.identity.is_some()
                && s.stream.ssl_write(&datagram).is_ok()
            {
                wire.extend(s.stream.get_mut().outgoing.drain(..).map(|d| (peer, d)));
            }
        }
        for (peer, d) in wire {
            super::send(&socket, peer, &d).await;
        }
    }
    server.close();
}
