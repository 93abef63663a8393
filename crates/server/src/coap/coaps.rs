//! The CoAPS listener: one OpenSSL DTLS session per peer address over an
//! in-memory datagram pipe, so the same [`super::Server`] sees decrypted
//! datagrams and the identity the peer proved (its PSK identity, or the
//! name in its verified client certificate, `[tls] peer_cert_login_from`),
//! which logs in as the broker user of that name.
//!
//! Only a datagram that looks like a ClientHello opens a session; sessions
//! that have not finished their handshake are bounded in number and
//! dropped after [`crate::tls::HANDSHAKE_TIMEOUT`], and each tick lets
//! OpenSSL resend the server's own lost handshake flight.

use super::dtls::handle_timeout;
use super::{CoapContext, MAX_DATAGRAM, Server, TICK};
use crate::config::CertLoginFrom;
use crate::registry::Transport;
use bytes::Bytes;
use openssl::ex_data::Index;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslStream};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;

/// The path MTU we assume (no IP-level discovery on a custom pipe).
const MTU: u32 = 1280;
/// Handshakes in progress at once; ClientHellos from new addresses beyond
/// it are dropped (the clients retransmit).
const MAX_HALF_OPEN: usize = 1024;
/// DTLS record content type of a handshake message, and the handshake type
/// of a ClientHello (RFC 6347 §4.1, §4.2.2).
const HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;

/// What the CoAPS listener needs besides the CoAP context.
pub struct Dtls {
    /// The server context (`super::dtls::context`).
    pub context: SslContext,
    /// Where each session keeps its peer address (for the cookie).
    pub peer_addr: Index<Ssl, SocketAddr>,
    /// Which name of a client certificate is the user.
    pub login_from: CertLoginFrom,
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
    established: bool,
    /// The PSK identity or client-certificate name it proved.
    identity: Option<String>,
    started: Instant,
    last: Instant,
}

impl Session {
    fn drain(&mut self, peer: SocketAddr, wire: &mut Vec<(SocketAddr, Bytes)>) {
        wire.extend(self.stream.get_mut().outgoing.drain(..).map(|d| (peer, d)));
    }
}

fn wants_more(e: &openssl::ssl::Error) -> bool {
    matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE)
}

/// Whether a datagram opens with a DTLS handshake record carrying a
/// ClientHello (13-byte record header, then the handshake type).
fn is_client_hello(d: &[u8]) -> bool {
    d.len() > 25 && d[0] == HANDSHAKE && d[13] == CLIENT_HELLO
}

/// The identity a finished handshake proved: the PSK identity, else the
/// name of the verified client certificate.
fn proven_identity(ssl: &openssl::ssl::SslRef, login_from: CertLoginFrom) -> Option<String> {
    if let Some(i) = ssl.psk_identity() {
        return Some(String::from_utf8_lossy(i).into_owned());
    }
    // OpenSSL keeps a peer certificate only once it verified it (we ask
    // for one only under `verify_peer`).
    let cert = ssl.peer_certificate()?;
    let der = cert.to_der().ok()?;
    crate::tls::peer_name(&der, login_from)
}

/// Serves CoAP over DTLS on a bound UDP socket until shutdown.
pub async fn run(socket: UdpSocket, ctx: Arc<CoapContext>, dtls: Dtls) {
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
                        let half_open = sessions.values().filter(|s| !s.established).count();
                        if !is_client_hello(&data)
                            || sessions.len() >= ctx.config.max_peers
                            || half_open >= MAX_HALF_OPEN
                        {
                            continue;
                        }
                        match new_session(&dtls, peer, now) {
                            Ok(s) => {
                                sessions.insert(peer, s);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot start a DTLS session");
                                continue;
                            }
                        }
                    }
                    let Some(s) = sessions.get_mut(&peer) else { continue };
                    if receive(s, peer, data, &dtls, &mut server, &mut plain, now) {
                        s.drain(peer, &mut wire);
                    } else {
                        s.drain(peer, &mut wire);
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
                sessions.retain(|peer, s| {
                    if s.established {
                        return now.duration_since(s.last) < idle;
                    }
                    // The server's own lost flight goes again when its timer runs out.
                    if handle_timeout(s.stream.ssl()) {
                        tracing::debug!(%peer, "DTLS handshake flight resent");
                        s.drain(*peer, &mut wire);
                    }
                    now.duration_since(s.started) < crate::tls::HANDSHAKE_TIMEOUT
                });
            }
        }
        for (peer, datagram) in server.drain_transmit() {
            if let Some(s) = sessions.get_mut(&peer)
                && s.established
                && s.stream.ssl_write(&datagram).is_ok()
            {
                s.drain(peer, &mut wire);
            }
        }
        // Peers closed from the management API: their sessions end too.
        for peer in server.take_closed() {
            if let Some(mut s) = sessions.remove(&peer) {
                let _ = s.stream.shutdown();
                s.drain(peer, &mut wire);
            }
        }
        for (peer, d) in wire {
            super::send(&socket, peer, &d).await;
        }
    }
    server.close();
}

fn new_session(
    dtls: &Dtls,
    peer: SocketAddr,
    now: Instant,
) -> Result<Session, openssl::error::ErrorStack> {
    let mut ssl = Ssl::new(&dtls.context)?;
    ssl.set_mtu(MTU)?;
    ssl.set_ex_data(dtls.peer_addr, peer);
    Ok(Session {
        stream: SslStream::new(ssl, Pipe::default())?,
        established: false,
        identity: None,
        started: now,
        last: now,
    })
}

/// Feeds one datagram to a session: the handshake, then records whose
/// plaintext goes to the CoAP server. False when the session is over.
fn receive(
    s: &mut Session,
    peer: SocketAddr,
    data: Bytes,
    dtls: &Dtls,
    server: &mut Server,
    plain: &mut [u8],
    now: Instant,
) -> bool {
    s.last = now;
    s.stream.get_mut().incoming.push_back(data);
    if !s.established {
        match s.stream.accept() {
            Ok(()) => {
                s.established = true;
                s.identity = proven_identity(s.stream.ssl(), dtls.login_from);
                tracing::debug!(%peer, identity = ?s.identity, "DTLS session established");
            }
            Err(e) if wants_more(&e) => return true,
            Err(e) => {
                tracing::info!(%peer, error = %e, "DTLS handshake failed");
                return false;
            }
        }
    }
    loop {
        match s.stream.ssl_read(plain) {
            Ok(n) => server.datagram(
                peer,
                Bytes::copy_from_slice(&plain[..n]),
                s.identity.as_deref(),
                now,
            ),
            Err(e) if wants_more(&e) => return true,
            // close_notify or a fatal alert.
            Err(_) => return false,
        }
    }
}
