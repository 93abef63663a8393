//! Federation: XMPP server-to-server streams (RFC 6120) driving the sans-IO
//! machines of `tributary_xmpp::s2s`.
//!
//! [`S2s`] keeps one outbound stream per peer domain, each run by its own
//! task that connects (the static `[xmpp.s2s] peers` map or `peers_file`,
//! else DNS SRV and A/AAAA, see [`dns`]), negotiates STARTTLS (or starts
//! with TLS for an `_xmpps-server` record),
//! authenticates (SASL EXTERNAL or dialback) and then sends what the hub
//! routes there. Stanzas wait in the task's bounded queue while the stream
//! is set up; when the peer cannot be reached they go back to the hub,
//! which bounces them to their senders (`<remote-server-not-found/>`, or
//! `<remote-server-timeout/>` when the handshake took too long). A stream
//! idle for `idle_timeout` closes; the next stanza opens a new one.
//! Streams are keyed by (our sending domain, peer domain): stanzas from our
//! MUC and pubsub services leave on streams of their own, authenticated for
//! the service's domain (by dialback, or a certificate valid for it), as
//! peers such as Prosody require.
//! Inbound streams (the `xmpp_server` and `xmpps_server` listeners) hand
//! their stanzas to the hub, and dialback keys they receive are checked by
//! connecting back to the claimed domain.

pub mod dns;
pub mod tls;

use super::XmppContext;
use crate::config::S2sConfig;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_xmpp::s2s::{self as machine, Event, Inbound, Outbound, Purpose};
use tributary_xmpp_xml::{Element, Limits};

/// The federation service of one domain.
pub struct S2s {
    ctx: Weak<XmppContext>,
    config: S2sConfig,
    domain: String,
    services: Vec<String>,
    tls: Option<tls::S2sTls>,
    secret: Vec<u8>,
    limits: Limits,
    routes: Mutex<HashMap<(String, String), mpsc::Sender<Element>>>,
    resolver: Option<hickory_resolver::TokioResolver>,
    shutdown: CancellationToken,
    epoch: Instant,
}

/// A TCP stream, plain or with TLS on either side.
enum Stream {
    Plain(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Client(s) => s.read(buf).await,
            Stream::Server(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Client(s) => s.write_all(bytes).await,
            Stream::Server(s) => s.write_all(bytes).await,
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Client(s) => s.shutdown().await,
            Stream::Server(s) => s.shutdown().await,
        };
    }
}

/// The two machines, as far as the socket pump is concerned.
trait Machine {
    fn transmit(&mut self) -> Option<Vec<u8>>;
    fn gone(&mut self);
}

impl Machine for Inbound {
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
    fn gone(&mut self) {
        self.transport_closed()
    }
}

impl Machine for Outbound {
    fn transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_transmit()
    }
    fn gone(&mut self) {
        self.transport_closed()
    }
}

async fn flush(stream: &mut Stream, m: &mut (dyn Machine + Send)) -> io::Result<()> {
    let mut out = Vec::new();
    while let Some(chunk) = m.transmit() {
        out.extend(chunk);
    }
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    Ok(())
}

/// What woke a pump up.
enum Wake {
    Read(io::Result<usize>),
    Timer,
    Stanza(Option<Element>),
    Verified(Option<(String, String, bool)>),
    Shutdown,
}

/// How an outbound stream ended.
enum OutEnd {
    /// Never authenticated: the stream error condition, if any.
    Failed(Option<String>),
    /// Authenticated, then closed (idle, the peer, shutdown).
    Closed,
    /// A verify stream's answer.
    Verified(bool),
}

impl S2s {
    /// Sets federation up for `ctx`'s domain; `certificate`/`key` are the
    /// XMPP TLS pair (without them no TLS is offered or used).
    pub fn new(
        ctx: Weak<XmppContext>,
        xmpp: &crate::config::XmppConfig,
        tls_files: Option<(&std::path::Path, &std::path::Path)>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let config = xmpp.s2s.clone();
        let tls = match tls_files {
            Some((cert, key)) => Some(tls::S2sTls::load(
                cert,
                key,
                &config.ca_certificates,
                &config.insecure_domains,
                config.dialback,
            )?),
            None => None,
        };
        let secret = if config.dialback_secret.is_empty() {
            let mut s = Vec::with_capacity(32);
            s.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            s.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
            s
        } else {
            config.dialback_secret.as_bytes().to_vec()
        };
        let services = [xmpp.muc_jid(), xmpp.pubsub_jid(), xmpp.upload_jid()]
            .into_iter()
            .flatten()
            .collect();
        let resolver = dns::build_resolver(&config.resolver)?;
        Ok(Arc::new(S2s {
            ctx,
            resolver,
            domain: xmpp.domain.clone(),
            services,
            tls,
            secret,
            limits: Limits {
                max_stanza_bytes: xmpp.max_stanza_size,
                ..Limits::default()
            },
            config,
            routes: Mutex::new(HashMap::new()),
            shutdown,
            epoch: Instant::now(),
        }))
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn machine_config(&self, stream_id: String, secure: bool) -> machine::S2sConfig {
        self.machine_config_for(&self.domain, stream_id, secure)
    }

    fn machine_config_for(
        &self,
        local: &str,
        stream_id: String,
        secure: bool,
    ) -> machine::S2sConfig {
        machine::S2sConfig {
            local_domain: local.to_string(),
            local_services: self.services.clone(),
            stream_id,
            limits: self.limits,
            tls_offered: self.tls.is_some(),
            require_encryption: self.config.require_encryption,
            dialback: self.config.dialback,
            secure,
            secret: self.secret.clone(),
            handshake_timeout_ms: self.config.connect_timeout.saturating_mul(1000),
            idle_timeout_ms: self.config.idle_timeout.saturating_mul(1000),
        }
    }

    /// Queues a stanza (`to` another domain) for its peer, starting a
    /// stream when there is none. Never blocks (called with the hub locked).
    pub fn send(self: &Arc<Self>, stanza: Element) {
        let domain = stanza
            .attr("to")
            .map(|to| machine::jid_domain(to).to_ascii_lowercase())
            .unwrap_or_default();
        let local = stanza
            .attr("from")
            .map(|f| machine::jid_domain(f).to_ascii_lowercase())
            .filter(|d| self.services.iter().any(|s| s.eq_ignore_ascii_case(d)))
            .unwrap_or_else(|| self.domain.clone());
        let key = (local, domain);
        let mut stanza = stanza;
        let mut routes = self.routes.lock();
        if let Some(tx) = routes.get(&key) {
            match tx.try_send(stanza) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(s)) => {
                    drop(routes);
                    self.bounce(vec![s], "remote-server-timeout");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(s)) => stanza = s,
            }
        }
        let (tx, rx) = mpsc::channel(self.config.queue_limit.max(1));
        let _ = tx.try_send(stanza);
        routes.insert(key.clone(), tx.clone());
        drop(routes);
        let this = self.clone();
        tokio::spawn(async move { this.run_route(key, tx, rx).await });
    }

    /// Gives stanzas back to the hub to bounce, from a task of its own
    /// (the caller may hold the hub's lock).
    fn bounce(&self, stanzas: Vec<Element>, condition: &'static str) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            for s in stanzas {
                ctx.remote_failed(&s, condition);
            }
        });
    }

    async fn run_route(
        self: Arc<Self>,
        key: (String, String),
        tx: mpsc::Sender<Element>,
        mut rx: mpsc::Receiver<Element>,
    ) {
        let (local, domain) = (&key.0, &key.1);
        let end = self
            .connect_and_run(local, domain, Purpose::Stanzas, Some(&mut rx))
            .await;
        {
            let mut routes = self.routes.lock();
            if routes.get(&key).is_some_and(|t| t.same_channel(&tx)) {
                routes.remove(&key);
            }
        }
        drop(tx);
        rx.close();
        let mut left = Vec::new();
        while let Ok(s) = rx.try_recv() {
            left.push(s);
        }
        match end {
            OutEnd::Failed(condition) => {
                let condition = if condition.as_deref() == Some("connection-timeout") {
                    "remote-server-timeout"
                } else {
                    "remote-server-not-found"
                };
                tracing::info!(
                    domain,
                    condition,
                    bounced = left.len(),
                    "XMPP peer not reachable"
                );
                self.bounce(left, condition);
            }
            OutEnd::Closed | OutEnd::Verified(_) => {
                tracing::info!(
                    local,
                    domain,
                    requeued = left.len(),
                    "XMPP outbound stream closed"
                );
                if !self.shutdown.is_cancelled() {
                    for s in left {
                        self.send(s);
                    }
                }
            }
        }
    }

    /// Connects to `domain` for `local` (our domain or one of our
    /// services), trying each place DNS gives in order, and runs the stream.
    async fn connect_and_run(
        &self,
        local: &str,
        domain: &str,
        purpose: Purpose,
        rx: Option<&mut mpsc::Receiver<Element>>,
    ) -> OutEnd {
        let limit = Duration::from_secs(self.config.connect_timeout.max(1));
        let started = Instant::now();
        let mut connected = None;
        let targets = match tokio::time::timeout(
            limit,
            dns::resolve(&self.config, self.resolver.as_ref(), domain),
        )
        .await
        {
            Ok(t) => t,
            Err(_) => return OutEnd::Failed(Some("connection-timeout".into())),
        };
        for target in targets {
            let left = limit.saturating_sub(started.elapsed());
            let addr = target.addr;
            match tokio::time::timeout(left, self.open(domain, &target)).await {
                Ok(Ok(s)) => {
                    connected = Some((s, target.direct_tls));
                    break;
                }
                Ok(Err(e)) => tracing::debug!(domain, %addr, error = %e, "XMPP peer refused"),
                Err(_) => return OutEnd::Failed(Some("connection-timeout".into())),
            }
        }
        let Some((stream, direct_tls)) = connected else {
            return OutEnd::Failed(None);
        };
        tracing::debug!(local, domain, direct_tls, "XMPP outbound stream connected");
        let m = Outbound::new(
            self.machine_config_for(local, String::new(), direct_tls),
            domain,
            purpose,
            self.now(),
        );
        self.run_outbound(stream, m, rx).await
    }

    /// A TCP connection to `target`, with TLS from the first byte for an
    /// `_xmpps-server` target (XEP-0368: SNI and certificate name are the
    /// peer's XMPP domain, ALPN `xmpp-server`).
    async fn open(&self, domain: &str, target: &dns::Target) -> io::Result<Stream> {
        let tcp = TcpStream::connect(target.addr).await?;
        let _ = tcp.set_nodelay(true);
        if !target.direct_tls {
            return Ok(Stream::Plain(tcp));
        }
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| io::Error::other("no certificate for direct TLS"))?;
        let name = rustls::pki_types::ServerName::try_from(domain.to_string())
            .map_err(|_| io::Error::other("domain is not a TLS server name"))?;
        let connector = tokio_rustls::TlsConnector::from(tls.client_direct.clone());
        let s = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        Ok(Stream::Client(Box::new(s)))
    }

    async fn run_outbound(
        &self,
        mut stream: Stream,
        mut m: Outbound,
        mut rx: Option<&mut mpsc::Receiver<Element>>,
    ) -> OutEnd {
        let mut buf = vec![0u8; 16 * 1024];
        let mut authenticated = false;
        let mut starttls_done = false;
        loop {
            if flush(&mut stream, &mut m).await.is_err() {
                m.gone();
            }
            while let Some(event) = m.poll_event() {
                match event {
                    Event::StartTls => {
                        let Some(tls) = &self.tls else {
                            return OutEnd::Failed(None);
                        };
                        let Stream::Plain(tcp) = stream else {
                            return OutEnd::Failed(None);
                        };
                        let Ok(name) =
                            rustls::pki_types::ServerName::try_from(m.remote().to_string())
                        else {
                            return OutEnd::Failed(None);
                        };
                        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                        match tokio::time::timeout(
                            crate::tls::HANDSHAKE_TIMEOUT,
                            connector.connect(name, tcp),
                        )
                        .await
                        {
                            Ok(Ok(s)) => {
                                stream = Stream::Client(Box::new(s));
                                starttls_done = true;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(domain = m.remote(), error = %e, "XMPP peer TLS failed");
                                return OutEnd::Failed(None);
                            }
                            Err(_) => return OutEnd::Failed(Some("connection-timeout".into())),
                        }
                        m.tls_established();
                        if flush(&mut stream, &mut m).await.is_err() {
                            return OutEnd::Failed(None);
                        }
                    }
                    Event::Authenticated { domain, method } => {
                        let direct_tls = matches!(stream, Stream::Client(_)) && !starttls_done;
                        tracing::info!(
                            domain,
                            local = m.local(),
                            method,
                            direct_tls,
                            "XMPP outbound stream authenticated"
                        );
                        authenticated = true;
                    }
                    Event::VerifyResult { valid, .. } => {
                        stream.shutdown().await;
                        return OutEnd::Verified(valid);
                    }
                    Event::Closed { condition } => {
                        let _ = flush(&mut stream, &mut m).await;
                        stream.shutdown().await;
                        return if authenticated {
                            OutEnd::Closed
                        } else {
                            OutEnd::Failed(condition)
                        };
                    }
                    Event::Stanza(_) | Event::VerifyDialback { .. } => {}
                }
            }
            let deadline = m
                .poll_timeout()
                .map(|t| self.epoch + Duration::from_millis(t));
            let wake = {
                let ready = m.is_ready();
                let next_stanza = async {
                    match (&mut rx, ready) {
                        (Some(rx), true) => rx.recv().await,
                        _ => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = stream.read(&mut buf) => Wake::Read(r),
                    s = next_stanza => Wake::Stanza(s),
                    _ = sleep_until(deadline) => Wake::Timer,
                    _ = self.shutdown.cancelled() => Wake::Shutdown,
                }
            };
            match wake {
                Wake::Read(Ok(n)) if n > 0 => {
                    m.handle_input(&buf[..n], self.now());
                }
                Wake::Read(_) => m.gone(),
                Wake::Stanza(Some(s)) => {
                    let now = self.now();
                    if let Err(s) = m.send_stanza(s, now) {
                        self.bounce(vec![s], "remote-server-not-found");
                    }
                    // Take whatever else is queued in the same wake-up.
                    if let Some(rx) = rx.as_deref_mut() {
                        while let Ok(s) = rx.try_recv() {
                            if let Err(s) = m.send_stanza(s, now) {
                                self.bounce(vec![s], "remote-server-not-found");
                            }
                        }
                    }
                }
                Wake::Stanza(None) => m.close(),
                Wake::Timer => m.handle_timeout(self.now()),
                Wake::Shutdown => m.close(),
                Wake::Verified(_) => {}
            }
        }
    }

    /// Asks `from` (the authoritative server) whether `key` is valid for
    /// its stream `stream_id` to our domain `to` (XEP-0220 §2.2).
    async fn verify(
        self: Arc<Self>,
        from: String,
        to: String,
        key: String,
        stream_id: String,
    ) -> bool {
        let purpose = Purpose::Verify { stream_id, key };
        matches!(
            self.connect_and_run(&to, &from, purpose, None).await,
            OutEnd::Verified(true)
        )
    }

    /// Serves one inbound stream (`direct_tls`: XEP-0368 listener).
    pub async fn run_inbound(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, direct_tls: bool) {
        let _ = tcp.set_nodelay(true);
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let stream_id = uuid::Uuid::new_v4().simple().to_string();
        let mut stream = Stream::Plain(tcp);
        let mut names = Vec::new();
        if direct_tls {
            let Some(tls) = &self.tls else { return };
            let Stream::Plain(tcp) = stream else { return };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
            match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => {
                    names = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| tls.valid_names(c))
                        .unwrap_or_default();
                    stream = Stream::Server(Box::new(s));
                }
                _ => {
                    tracing::debug!(%peer, "XMPP s2s direct TLS handshake failed");
                    return;
                }
            }
        }
        let mut m = Inbound::new(self.machine_config(stream_id, direct_tls), self.now());
        m.set_peer_names(names);
        let (vtx, mut vrx) = mpsc::channel::<(String, String, bool)>(16);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if flush(&mut stream, &mut m).await.is_err() {
                m.gone();
                return;
            }
            while let Some(event) = m.poll_event() {
                match event {
                    Event::StartTls => {
                        let Some(tls) = &self.tls else { return };
                        let Stream::Plain(tcp) = stream else { return };
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                        let Ok(Ok(s)) = tokio::time::timeout(
                            crate::tls::HANDSHAKE_TIMEOUT,
                            acceptor.accept(tcp),
                        )
                        .await
                        else {
                            tracing::debug!(%peer, "XMPP s2s STARTTLS handshake failed");
                            return;
                        };
                        let names = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| tls.valid_names(c))
                            .unwrap_or_default();
                        stream = Stream::Server(Box::new(s));
                        m.tls_established(names);
                    }
                    Event::Authenticated { domain, method } => {
                        tracing::info!(
                            %peer,
                            domain,
                            method,
                            direct_tls,
                            "XMPP inbound stream authenticated"
                        );
                    }
                    Event::VerifyDialback {
                        from,
                        to,
                        key,
                        stream_id,
                    } => {
                        let this = self.clone();
                        let vtx = vtx.clone();
                        tokio::spawn(async move {
                            let valid = this.verify(from.clone(), to.clone(), key, stream_id).await;
                            let _ = vtx.send((from, to, valid)).await;
                        });
                    }
                    Event::Stanza(stanza) => ctx.handle_remote_stanza(stanza),
                    Event::Closed { .. } => {
                        let _ = flush(&mut stream, &mut m).await;
                        stream.shutdown().await;
                        return;
                    }
                    Event::VerifyResult { .. } => {}
                }
            }
            let deadline = m
                .poll_timeout()
                .map(|t| self.epoch + Duration::from_millis(t));
            let wake = tokio::select! {
                r = stream.read(&mut buf) => Wake::Read(r),
                v = vrx.recv() => Wake::Verified(v),
                _ = sleep_until(deadline) => Wake::Timer,
                _ = self.shutdown.cancelled() => Wake::Shutdown,
            };
            match wake {
                Wake::Read(Ok(n)) if n > 0 => {
                    m.handle_input(&buf[..n], self.now());
                }
                Wake::Read(_) => {
                    m.gone();
                    return;
                }
                Wake::Verified(Some((from, to, valid))) => m.dialback_verified(&from, &to, valid),
                Wake::Verified(None) | Wake::Stanza(_) => {}
                Wake::Timer => m.handle_timeout(self.now()),
                Wake::Shutdown => m.close_with_error("system-shutdown", None),
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
