//! One client connection: feeds the transport into the c2s machine, carries
//! out its events against the [`XmppContext`], and delivers the session's
//! mailbox to the client. A session with resumable stream management
//! outlives a dropped connection until it is resumed or times out.
//!
//! Limits (`[limits]`, docs/security.md): the connection takes its place
//! among all connections when accepted (and is refused with a stream error
//! if there is none), its user's place once authenticated; it must have a
//! bound resource within the handshake timeout; its stanzas are paced by a
//! token bucket (reading stops while it is empty); and a write to a client
//! that does not read is abandoned once the session is killed for it.

use super::transport::{Incoming, StreamTransport, Transport, WsTransport};
use super::{Detached, MailboxReceiver, MailboxSender, SessionMsg, XmppContext, mailbox};
use crate::limits::{ConnectionSlot, Refusal, TokenBucket, UserSlot};
use crate::users::UserDb;
use axum::extract::ws::WebSocket;
use jid::FullJid;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tributary_sasl::{ScramCredentials, ScramHash};
use tributary_xmpp::c2s::{Authenticator, C2sConfig, Connection, Event};
use tributary_xmpp::hub::SessionId;
use tributary_xmpp::ns;
use tributary_xmpp_xml::{Element, Limits};

/// Mailbox messages handled per wake-up before flushing.
const DELIVERY_BATCH: usize = 64;
/// Presence updates held for an inactive client (XEP-0352) before they are
/// sent anyway.
const MAX_HELD_PRESENCE: usize = 256;
/// How long closing the transport may take (a TLS close_notify to a client
/// that does not read would wait for ever).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a run over one transport ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The client asked for STARTTLS; upgrade and go on.
    StartTls,
    /// The stream ended (close, stream error, shutdown).
    Closed,
    /// The transport dropped without a stream close.
    Dropped,
    /// Another connection resumed this session.
    TakenOver,
}

/// The session side of a connection.
struct Link {
    username: Option<String>,
    session: Option<SessionId>,
    mailbox: Option<MailboxReceiver>,
    kill: CancellationToken,
    registered_resumable: bool,
    active: bool,
    held: Vec<Element>,
    peer: IpAddr,
    /// This connection's place among all connections (released when its
    /// transport ends, even if the session waits to be resumed).
    slot: Option<ConnectionSlot>,
    /// Why it has none, when it was accepted past the limit.
    over_limit: Option<Refusal>,
    /// Its user's place, once authenticated.
    user_slot: Option<UserSlot>,
    /// Set once this connection was refused for a limit: nothing more it
    /// sent is acted on.
    refused: bool,
    /// When the stream must have a bound resource.
    handshake_deadline: tokio::time::Instant,
    /// Paces the client's stanzas (`None`: no limit).
    rate: Option<TokenBucket>,
    /// Its entry in the connection registry while its transport is up.
    reg: Option<crate::registry::Registration>,
}

struct Auth<'a> {
    users: &'a UserDb,
    secret: &'a [u8],
    peer: IpAddr,
}

impl Authenticator for Auth<'_> {
    fn scram_credentials(&self, username: &str, hash: ScramHash) -> Option<ScramCredentials> {
        if !self.users.may_connect_from(username, self.peer) {
            return None;
        }
        self.users.scram_credentials(username, hash)
    }

    fn check_plain(&self, username: &str, password: &str) -> bool {
        if self
            .users
            .authenticate(username, password, self.peer)
            .is_err()
        {
            return false;
        }
        if let Err(e) = self.users.upgrade_scram(username, password) {
            tracing::warn!(error = %e, username, "cannot add SCRAM keys to the account");
        }
        true
    }

    fn check_external(&self, username: &str) -> bool {
        self.users.exists(username) && self.users.may_connect_from(username, self.peer)
    }

    fn secret(&self) -> &[u8] {
        self.secret
    }
}

fn c2s_config(ctx: &XmppContext, peer: IpAddr, secure: bool, framed: bool) -> C2sConfig {
    let loopback = UserDb::is_loopback(peer);
    C2sConfig {
        domain: ctx.config.domain.clone(),
        starttls_offered: ctx.tls.is_some() && !secure && !framed,
        tls_required: ctx.config.require_tls && !loopback,
        secure,
        loopback,
        framed,
        registration: ctx.config.registration,
        resumption_timeout_secs: ctx.config.resumption_timeout,
        max_auth_attempts: 3,
        limits: Limits {
            max_stanza_bytes: ctx.config.max_stanza_size,
            max_depth: ctx.config.max_depth,
            ..Limits::default()
        },
        stream_id: uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// Serves one TCP connection: STARTTLS on the ordinary port, or TLS from
/// the first byte on the direct-TLS port (XEP-0368).
pub async fn run_tcp(stream: TcpStream, peer: SocketAddr, ctx: Arc<XmppContext>, direct_tls: bool) {
    let _ = stream.set_nodelay(true);
    let mut link = Link::new(peer.ip(), &ctx);
    let local = stream.local_addr().ok();
    let transport = crate::registry::Transport {
        local,
        tls: direct_tls,
        websocket: false,
    };
    link.register(&ctx, peer, transport);
    if direct_tls {
        let Some(tls) = ctx.tls.clone() else { return };
        let Ok(accepted) = Box::pin(tls.accept(stream)).await else {
            tracing::debug!(%peer, "XMPP TLS handshake failed");
            return;
        };
        let stream = accepted.stream;
        let mut conn = Connection::new(c2s_config(&ctx, peer.ip(), true, false));
        conn.set_channel_bindings(accepted.bindings);
        conn.set_peer_identity(accepted.peer_name);
        let mut transport = StreamTransport::new(stream);
        let outcome = pump(&mut transport, &mut conn, &mut link, &ctx).await;
        Box::pin(finish(outcome, conn, link, &ctx)).await;
        return;
    }
    let mut conn = Connection::new(c2s_config(&ctx, peer.ip(), false, false));
    let mut transport = StreamTransport::new(stream);
    let outcome = pump(&mut transport, &mut conn, &mut link, &ctx).await;
    if outcome != Outcome::StartTls {
        Box::pin(finish(outcome, conn, link, &ctx)).await;
        return;
    }
    let Some(tls) = ctx.tls.clone() else { return };
    let stream = transport.into_inner();
    let Ok(accepted) = Box::pin(tls.accept(stream)).await else {
        tracing::debug!(%peer, "XMPP STARTTLS handshake failed");
        return;
    };
    let stream = accepted.stream;
    conn.tls_established(accepted.bindings);
    conn.set_peer_identity(accepted.peer_name);
    if let Some(reg) = &link.reg {
        reg.set_tls();
    }
    let mut transport = StreamTransport::new(stream);
    let outcome = pump(&mut transport, &mut conn, &mut link, &ctx).await;
    Box::pin(finish(outcome, conn, link, &ctx)).await;
}

/// Serves one WebSocket connection (RFC 7395).
pub async fn run_ws(socket: WebSocket, peer: SocketAddr, ctx: Arc<XmppContext>) {
    let mut link = Link::new(peer.ip(), &ctx);
    let transport = crate::registry::Transport::current().unwrap_or_default();
    link.register(&ctx, peer, transport);
    let mut conn = Connection::new(c2s_config(&ctx, peer.ip(), false, true));
    let mut transport = WsTransport::new(socket);
    let outcome = pump(&mut transport, &mut conn, &mut link, &ctx).await;
    Box::pin(finish(outcome, conn, link, &ctx)).await;
}

impl Link {
    fn new(peer: IpAddr, ctx: &XmppContext) -> Self {
        let limits = &ctx.limits;
        let (slot, over_limit) = match limits.connections.admit() {
            Ok(slot) => (Some(slot), None),
            Err(refusal) => (None, Some(refusal)),
        };
        Link {
            username: None,
            session: None,
            mailbox: None,
            kill: CancellationToken::new(),
            registered_resumable: false,
            active: true,
            held: Vec::new(),
            peer,
            slot,
            over_limit,
            user_slot: None,
            refused: false,
            handshake_deadline: tokio::time::Instant::now() + limits.handshake_timeout,
            rate: TokenBucket::new(
                limits.stanza_rate,
                limits.stanza_burst,
                std::time::Instant::now(),
            ),
            reg: None,
        }
    }

    /// Joins the connection registry.
    fn register(&mut self, ctx: &XmppContext, peer: SocketAddr, t: crate::registry::Transport) {
        let registry = ctx.limits.connections.registry();
        self.reg = Some(registry.register(crate::registry::Protocol::Xmpp, peer, Some(t)));
    }

    /// Gives back this connection's places (its transport has ended).
    fn release_places(&mut self) {
        self.slot = None;
        self.user_slot = None;
        self.reg = None;
    }

    /// Refuses the connection for a limit: a stream error, and nothing it
    /// sent from now on is acted on.
    fn refuse(&mut self, conn: &mut Connection, condition: &str, refusal: &Refusal) {
        tracing::warn!(peer = %self.peer, user = self.username.as_deref().unwrap_or(""), "XMPP connection refused: {}", refusal.text());
        self.refused = true;
        conn.close_with_error(condition, Some(&refusal.text()));
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Completes when an operator asked to close the connection.
async fn close_requested(reg: &Option<crate::registry::Registration>) {
    match reg {
        Some(reg) => reg.close_requested().await,
        None => std::future::pending().await,
    }
}

async fn recv(mailbox: &mut Option<MailboxReceiver>) -> Option<SessionMsg> {
    match mailbox {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn pump<T: Transport>(
    transport: &mut T,
    conn: &mut Connection,
    link: &mut Link,
    ctx: &XmppContext,
) -> Outcome {
    // Boxed, as every wait of a connection but its main loop's: a
    // connection's futures then take the memory of the state they are in,
    // not that of the largest one (memory per idle connection).
    let outcome = Box::pin(pump_transport(transport, conn, link, ctx)).await;
    if outcome != Outcome::StartTls {
        link.release_places();
    }
    outcome
}

/// Runs one transport until it ends or is upgraded to TLS.
async fn pump_transport<T: Transport>(
    transport: &mut T,
    conn: &mut Connection,
    link: &mut Link,
    ctx: &XmppContext,
) -> Outcome {
    let mut pending: Vec<u8> = Vec::new();
    // Mailboxes of recipients more than half full: the client is not read
    // from until they drain (or CONGESTION_WAIT passes), so a fast sender is
    // slowed down rather than its recipients disconnected. Its own mailbox
    // keeps being delivered meanwhile, so two senders never wait on each other.
    let mut congested: Vec<(MailboxSender, CancellationToken)> = Vec::new();
    loop {
        // Past its stanza rate the client is not read from until the bucket refills.
        let throttled = link
            .rate
            .as_mut()
            .and_then(|r| r.ready_at(std::time::Instant::now()));
        tokio::select! {
            _ = wait_uncongested(&congested), if !congested.is_empty() => {
                congested.clear();
            }
            incoming = transport.read(), if throttled.is_none() && congested.is_empty() => {
                if matches!(incoming, Incoming::Closed) {
                    conn.transport_closed();
                    return Outcome::Dropped;
                }
                if link.refused {
                    // Refused already: its input is not acted on.
                } else if let Some(refusal) = &link.over_limit {
                    // Past the connection limit: answered once the client has spoken.
                    let refusal = refusal.clone();
                    link.refuse(conn, "resource-constraint", &refusal);
                } else {
                    let auth = Auth { users: &ctx.users, secret: &ctx.secret, peer: link.peer };
                    if let Some(reg) = &link.reg {
                        match &incoming {
                            Incoming::Data(data) => reg.counters.read(data.len()),
                            Incoming::Message(message) => reg.counters.read(message.len()),
                            Incoming::Closed => {}
                        }
                    }
                    match incoming {
                        Incoming::Data(data) => {
                            pending.extend_from_slice(&data);
                            let consumed = conn.handle_input(&pending, &auth);
                            pending.drain(..consumed);
                        }
                        Incoming::Message(message) => conn.handle_message(&message, &auth),
                        Incoming::Closed => {}
                    }
                }
            }
            _ = sleep_until(throttled), if throttled.is_some() => {}
            _ = tokio::time::sleep_until(link.handshake_deadline), if link.session.is_none() && !conn.is_closed() => {
                tracing::info!(peer = %link.peer, user = link.username.as_deref().unwrap_or(""), "XMPP handshake timeout");
                conn.close_with_error("connection-timeout", Some("the stream was not set up in time"));
            }
            msg = recv(&mut link.mailbox) => {
                let mut next = msg;
                for taken in 1..=DELIVERY_BATCH {
                    match next {
                        Some(SessionMsg::Deliver(stanza)) => {
                            if let Some(reg) = &link.reg {
                                reg.counters.message_out();
                            }
                            deliver(conn, link, stanza)
                        }
                        Some(SessionMsg::Close(condition, text)) => {
                            conn.close_with_error(condition, text.as_deref());
                            break;
                        }
                        Some(SessionMsg::TakeOver(reply)) => {
                            hand_over(conn, link, reply);
                            let _ = Box::pin(tokio::time::timeout(SHUTDOWN_TIMEOUT, async {
                                let _ = transport.write(drain(conn)).await;
                                transport.shutdown().await;
                            }))
                            .await;
                            return Outcome::TakenOver;
                        }
                        None => {
                            conn.close_with_error("internal-server-error", None);
                            break;
                        }
                    }
                    if taken == DELIVERY_BATCH {
                        // Not one more: a message taken now would be dropped with the batch.
                        break;
                    }
                    next = match link.mailbox.as_mut().and_then(MailboxReceiver::try_recv) {
                        Some(msg) => Some(msg),
                        None => break,
                    };
                }
                conn.request_ack_if_due();
            }
            _ = ctx.shutdown.cancelled() => {
                conn.close_with_error("system-shutdown", None);
            }
            _ = link.kill.cancelled() => {
                conn.close_with_error("policy-violation", Some("the client does not read"));
            }
            _ = close_requested(&link.reg) => {
                let reason = link.reg.as_ref().map(|r| r.close_reason());
                conn.close_with_error("policy-violation", reason.as_deref());
            }
        }
        let mut upgrade = false;
        loop {
            while let Some(event) = conn.poll_event() {
                if link.refused {
                    // Events parsed before the refusal (a pipelined bind) are not acted on.
                    continue;
                }
                match event {
                    Event::StartTls => upgrade = true,
                    Event::Authenticated { username } => {
                        tracing::debug!(username, peer = %link.peer, "XMPP client authenticated");
                        match ctx.limits.connections.admit_user(&username) {
                            Ok(slot) => link.user_slot = Some(slot),
                            Err(refusal) => {
                                link.username = Some(username);
                                link.refuse(conn, "policy-violation", &refusal);
                                continue;
                            }
                        }
                        if let Some(reg) = &link.reg {
                            reg.set_user(&username);
                            reg.set_vhost(crate::users::DEFAULT_VHOST);
                        }
                        link.username = Some(username);
                    }
                    Event::AuthFailed => {
                        tracing::warn!(peer = %link.peer, "XMPP login refused");
                        // Slow down password guessing before the failure is sent.
                        Box::pin(async {
                            let _ = transport.write(Vec::new()).await;
                            tokio::time::sleep(ctx.limits.auth_failure_delay).await;
                        })
                        .await;
                    }
                    Event::Bind { id, resource } => bind(conn, link, ctx, &id, resource),
                    Event::Stanza(stanza) => {
                        if let Some(reg) = &link.reg {
                            reg.counters.message_in();
                        }
                        if let Some(rate) = link.rate.as_mut() {
                            rate.take(1, std::time::Instant::now());
                        }
                        if let Some(session) = link.session {
                            congested.extend(ctx.handle_stanza(session, stanza));
                        }
                    }
                    Event::Resume { previd, h } => {
                        Box::pin(resume(conn, link, ctx, &previd, h)).await
                    }
                    Event::Active(active) => {
                        link.active = active;
                        if active {
                            flush_held(conn, link);
                        }
                    }
                    Event::Register {
                        id,
                        username,
                        password,
                    } => {
                        let result = ctx.register_account(&username, &password);
                        conn.registration_done(&id, result);
                    }
                    Event::Closed => {}
                }
            }
            if !link.registered_resumable
                && conn.is_resumable()
                && let (Some(session), Some(id)) = (link.session, conn.sm_id())
            {
                ctx.register_resumable(&id, session, link.username.as_deref().unwrap_or(""));
                link.registered_resumable = true;
            }
            // Input held back behind an event that is answered now.
            if !pending.is_empty()
                && !conn.is_awaiting()
                && !conn.is_closed()
                && !upgrade
                && !link.refused
            {
                let auth = Auth {
                    users: &ctx.users,
                    secret: &ctx.secret,
                    peer: link.peer,
                };
                let consumed = conn.handle_input(&pending, &auth);
                pending.drain(..consumed);
                if consumed > 0 {
                    continue;
                }
            }
            break;
        }
        let chunks = drain(conn);
        if let Some(reg) = &link.reg {
            reg.counters.wrote(chunks.iter().map(Vec::len).sum());
        }
        let written = tokio::select! {
            biased;
            r = transport.write(chunks) => r.is_ok(),
            // The session was killed because the client does not read: do
            // not wait for it to make room.
            _ = link.kill.cancelled() => {
                tracing::info!(peer = %link.peer, user = link.username.as_deref().unwrap_or(""), "XMPP client does not read; connection dropped");
                conn.transport_closed();
                return Outcome::Closed;
            }
        };
        if !written {
            conn.transport_closed();
            return Outcome::Dropped;
        }
        if upgrade {
            return Outcome::StartTls;
        }
        if conn.is_closed() {
            // Its places are free before the client sees the end of the stream.
            link.release_places();
            let _ = Box::pin(tokio::time::timeout(SHUTDOWN_TIMEOUT, transport.shutdown())).await;
            return Outcome::Closed;
        }
    }
}

/// How long a sender waits for a congested recipient to drain below half;
/// a recipient that has not by then is not reading, and is closed.
const CONGESTION_WAIT: Duration = Duration::from_secs(2);

/// Waits until every mailbox in `congested` has drained below half; the
/// sessions of those that have not after [`CONGESTION_WAIT`] are closed.
async fn wait_uncongested(congested: &[(MailboxSender, CancellationToken)]) {
    let deadline = tokio::time::Instant::now() + CONGESTION_WAIT;
    for (mailbox, kill) in congested {
        if !mailbox.wait_uncongested(deadline).await {
            tracing::warn!("XMPP session does not read; closing it");
            kill.cancel();
        }
    }
}

fn drain(conn: &mut Connection) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        chunks.push(chunk);
    }
    chunks
}

/// Sends a stanza, holding presence back while the client is inactive
/// (XEP-0352): only the latest presence per sender is kept.
fn deliver(conn: &mut Connection, link: &mut Link, stanza: Element) {
    if !link.active && stanza.is("presence", ns::CLIENT) {
        let from = stanza.attr("from").map(str::to_string);
        link.held
            .retain(|held| held.attr("from").map(str::to_string) != from);
        link.held.push(stanza);
        if link.held.len() > MAX_HELD_PRESENCE {
            flush_held(conn, link);
        }
        return;
    }
    if !link.active && !link.held.is_empty() && stanza.is("message", ns::CLIENT) {
        flush_held(conn, link);
    }
    let _ = conn.send_stanza(stanza);
}

fn flush_held(conn: &mut Connection, link: &mut Link) {
    for stanza in link.held.drain(..) {
        let _ = conn.send_stanza(stanza);
    }
}

fn bind(
    conn: &mut Connection,
    link: &mut Link,
    ctx: &XmppContext,
    id: &str,
    resource: Option<String>,
) {
    let Some(username) = link.username.clone() else {
        conn.bound(id, Err(("auth", "not-authorized")));
        return;
    };
    let session = ctx.new_session_id();
    let (tx, rx) = mailbox(ctx.limits.max_buffered_bytes);
    match ctx.bind(
        session,
        &username,
        resource.as_deref(),
        tx,
        link.kill.clone(),
    ) {
        Ok(jid) => {
            tracing::info!(peer = %link.peer, user = link.username.as_deref().unwrap_or(""), %jid, "XMPP connection opened");
            link.session = Some(session);
            link.mailbox = Some(rx);
            if let Some(reg) = &link.reg {
                reg.set_client(&jid.to_string());
            }
            conn.bound(id, Ok(jid));
        }
        Err(error) => conn.bound(id, Err(error)),
    }
}

async fn resume(conn: &mut Connection, link: &mut Link, ctx: &XmppContext, previd: &str, h: u32) {
    let Some(username) = link.username.clone() else {
        conn.resume_failed();
        return;
    };
    match ctx.take_over(previd, &username).await {
        Some(detached) => {
            tracing::debug!(jid = %detached.jid, "XMPP session resumed");
            ctx.adopt(detached.session, link.kill.clone());
            link.session = Some(detached.session);
            link.mailbox = Some(detached.mailbox);
            link.registered_resumable = false;
            conn.resumed(previd, h, detached.jid, detached.sm);
        }
        None => conn.resume_failed(),
    }
}

fn hand_over(
    conn: &mut Connection,
    link: &mut Link,
    reply: tokio::sync::oneshot::Sender<Detached>,
) {
    let (Some(session), Some(mailbox), Some(jid), Some(sm)) = (
        link.session.take(),
        link.mailbox.take(),
        conn.jid().cloned(),
        conn.take_sm(),
    ) else {
        return;
    };
    let _ = reply.send(Detached {
        session,
        jid,
        sm,
        mailbox,
    });
    conn.transport_closed();
}

/// After the last transport: wait for resumption if the session is
/// resumable and the connection merely dropped, then end the session.
async fn finish(outcome: Outcome, mut conn: Connection, mut link: Link, ctx: &XmppContext) {
    let Some(session) = link.session else { return };
    if outcome == Outcome::TakenOver {
        return;
    }
    let jid: Option<FullJid> = conn.jid().cloned();
    if outcome == Outcome::Dropped && conn.is_resumable() {
        let timeout = tokio::time::sleep(Duration::from_secs(ctx.config.resumption_timeout.into()));
        tokio::pin!(timeout);
        loop {
            tokio::select! {
                _ = &mut timeout => break,
                _ = ctx.shutdown.cancelled() => break,
                msg = recv(&mut link.mailbox) => match msg {
                    Some(SessionMsg::Deliver(stanza)) => {
                        if conn.queue_detached(stanza).is_err() {
                            break;
                        }
                    }
                    Some(SessionMsg::TakeOver(reply)) => {
                        hand_over(&mut conn, &mut link, reply);
                        return;
                    }
                    Some(SessionMsg::Close(..)) | None => break,
                },
            }
        }
    }
    let unacked = conn
        .take_sm()
        .map(|mut sm| sm.take_unacked())
        .unwrap_or_default();
    ctx.end_session(session, jid.as_ref(), unacked);
}
