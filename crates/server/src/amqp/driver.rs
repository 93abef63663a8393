//! The IO driver of one AMQP connection: feeds socket bytes to the sans-IO
//! machine, runs the session, and writes what the machine produced, flushing
//! once per wake-up rather than once per frame.

use super::consumer::Outbound;
use super::session::{Flow, Session};
use crate::limits::{ConnectionSlot, Limits, Refusal, UserSlot};
use crate::users::UserDb;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tributary_amqp::{Connection, ConnectionConfig, Event, reply};
use tributary_core::Broker;

/// Stop reading from the socket while this much output waits to be written
/// (or `[limits] max_buffered_bytes`, if lower).
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Queue deliveries handled per wake-up before the socket gets a turn.
const DELIVERY_BUDGET: usize = 256;
/// How often a connection blocked by the inline memory check looks again.
const FLOW_RECHECK: Duration = Duration::from_millis(50);
/// How long a connection may take to answer our connection.close at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Everything a connection needs from the broker.
pub struct AmqpContext {
    /// The core.
    pub broker: Arc<Broker>,
    /// Accounts.
    pub users: Arc<UserDb>,
    /// Negotiation limits.
    pub config: ConnectionConfig,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// The memory alarm: while true, publishing connections are not read from.
    pub flow: tokio::sync::watch::Receiver<bool>,
    /// The memory high watermark, also checked on every wake-up so a fast
    /// publisher is stopped before the next sweep raises the alarm.
    pub watermark: usize,
    /// Connection limits shared with the other protocols.
    pub limits: Arc<Limits>,
    /// `[limits] max_buffered_bytes`: output waiting for the client past
    /// which no more deliveries are taken from queues.
    pub max_buffered_bytes: usize,
    /// `[auth] failure_delay_ms`: a refused login waits this long before the
    /// refusal is sent (only its own connection waits).
    pub auth_failure_delay: Duration,
}

/// How a connection reached the driver.
struct Origin {
    local: Option<SocketAddr>,
    tls: bool,
    /// The user name of a verified TLS client certificate: SASL EXTERNAL is offered.
    peer_identity: Option<String>,
}

/// The limits a connection holds: its place among all connections (none
/// when it was accepted past the limit) and, once open, its user's.
struct Places {
    peer: SocketAddr,
    /// Its entry in the connection registry (management API, metrics).
    reg: crate::registry::Registration,
    slot: Result<ConnectionSlot, Refusal>,
    user: Option<UserSlot>,
}

/// Runs one connection to its end.
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Arc<AmqpContext>) {
    let _ = stream.set_nodelay(true);
    let origin = Origin {
        local: stream.local_addr().ok(),
        tls: false,
        peer_identity: None,
    };
    let (rd, wr) = stream.into_split();
    drive(rd, wr, peer, ctx, origin).await;
}

/// Runs one AMQPS connection: the TLS handshake, then the connection.
pub async fn run_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<AmqpContext>,
    tls: crate::tls::TlsSetup,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let accepted = match tls.accept(stream).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "AMQP TLS handshake failed");
            return;
        }
    };
    let origin = Origin {
        local,
        tls: true,
        peer_identity: accepted.peer_name,
    };
    let (rd, wr) = tokio::io::split(accepted.stream);
    drive(rd, wr, peer, ctx, origin).await;
}

async fn drive<R, W>(mut rd: R, mut wr: W, peer: SocketAddr, ctx: Arc<AmqpContext>, origin: Origin)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let transport = crate::registry::Transport {
        local: origin.local,
        tls: origin.tls,
        ..Default::default()
    };
    let mut places = Places {
        reg: ctx
            .limits
            .registry()
            .register(crate::registry::Protocol::Amqp, peer, Some(transport)),
        peer,
        slot: ctx.limits.admit(),
        user: None,
    };
    let high_water = WRITE_HIGH_WATER.min(ctx.max_buffered_bytes);
    // Allocates nothing until the first delivery (memory per idle connection).
    let (tx, mut rx) = crate::mailbox::unbounded::<Outbound>();
    let config = match origin.peer_identity {
        Some(_) => ctx.config.clone().with_external(),
        None => ctx.config.clone(),
    };
    let mut conn = Connection::new(config, Instant::now());
    let mut session = Session::new(ctx.broker.clone(), ctx.users.clone(), peer, tx);
    session.set_max_pending_bytes(ctx.max_buffered_bytes);
    session.set_peer_identity(origin.peer_identity);
    // No read buffer while idle: reads go through the thread's scratch
    // buffer (up to 64 KiB at once) and only what came is kept here.
    let mut inbuf = BytesMut::new();
    let mut outbuf = BytesMut::new();
    let mut shutting_down = false;
    let mut shutdown_deadline: Option<tokio::time::Instant> = None;
    let mut closed = false;
    let mut flow = ctx.flow.clone();
    let mut blocked_sent = false;

    loop {
        if process_events(&mut conn, &mut session, &mut places, &ctx) == Flow::Closed {
            closed = true;
        }
        if session.take_login_refused() {
            // Slows down password guessing: the refusal waits, only this connection does.
            tokio::select! {
                _ = tokio::time::sleep(ctx.auth_failure_delay) => {}
                _ = ctx.shutdown.cancelled() => {}
            }
        }
        session.flush_confirms(&mut conn);
        let t = conn.transmit();
        if !t.is_empty() {
            if outbuf.is_empty() {
                std::mem::swap(&mut outbuf, t);
            } else {
                outbuf.extend_from_slice(t);
                t.clear();
            }
        }
        if closed || conn.is_closed() {
            break;
        }
        let timeout = conn
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .into_iter()
            .chain(shutdown_deadline)
            .min();
        let over = *flow.borrow() || ctx.broker.memory_budget().in_use() > ctx.watermark;
        let flow_blocked = over && session.is_publisher();
        if flow_blocked != blocked_sent && conn.is_open() {
            session.notify_blocked(&mut conn, flow_blocked);
            blocked_sent = flow_blocked;
            continue;
        }
        let can_read = outbuf.len() < high_water && !flow_blocked;
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                shutdown_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                if conn.is_open() {
                    session.close_all();
                    conn.close(reply::CONNECTION_FORCED, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'", 0, 0);
                } else {
                    break;
                }
            }
            _ = places.reg.close_requested(), if !shutting_down => {
                // DELETE /api/connections/{name}: RabbitMQ's 320 and text.
                shutting_down = true;
                shutdown_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                if conn.is_open() {
                    session.close_all();
                    conn.close(reply::CONNECTION_FORCED, &format!("CONNECTION_FORCED - {}", places.reg.close_reason()), 0, 0);
                } else {
                    break;
                }
            }
            r = wr.write_buf(&mut outbuf), if !outbuf.is_empty() => {
                match r {
                    Ok(n) => places.reg.counters.wrote(n),
                    Err(_) => break,
                }
            }
            r = crate::readbuf::read_into(&mut rd, &mut inbuf), if can_read => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        places.reg.counters.read(n);
                        conn.handle_input(&mut inbuf, Instant::now());
                    }
                }
                if inbuf.is_empty() && inbuf.capacity() != 0 {
                    inbuf = BytesMut::new();
                }
            }
            Some(first) = rx.recv(), if outbuf.len() < high_water => {
                if matches!(first, Outbound::Deliver(..)) {
                    places.reg.counters.message_out();
                }
                session.handle_outbound(&mut conn, first);
                for _ in 1..DELIVERY_BUDGET {
                    // Never more than max_buffered_bytes waiting for the client:
                    // the rest stays in the channel, and queues keep their messages.
                    if outbuf.len() + conn.transmit().len() >= ctx.max_buffered_bytes {
                        break;
                    }
                    match rx.try_recv() {
                        Some(next) => {
                            if matches!(next, Outbound::Deliver(..)) {
                                places.reg.counters.message_out();
                            }
                            session.handle_outbound(&mut conn, next)
                        }
                        None => break,
                    }
                }
                session.redispatch_if_starved();
            }
            r = flow.changed() => {
                if r.is_err() {
                    break;
                }
            }
            // Blocked on the inline check: look again shortly even if the alarm never flips.
            _ = tokio::time::sleep(FLOW_RECHECK), if flow_blocked && !*flow.borrow() => {}
            _ = sleep_until(timeout) => {
                if shutdown_deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                    break;
                }
                if flow_blocked {
                    conn.reading_paused(Instant::now());
                }
                conn.handle_timeout(Instant::now());
            }
        }
    }
    if !outbuf.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&outbuf)).await;
    }
    // Its places are free before the client sees the end of the stream, so
    // a client that saw it close can count on them.
    drop(places);
    let _ = wr.shutdown().await;
    session.close_all();
    // Deliveries still in flight go back to their queues.
    rx.close();
    while let Some(out) = rx.try_recv() {
        session.handle_outbound(&mut conn, out);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn process_events(
    conn: &mut Connection,
    session: &mut Session,
    places: &mut Places,
    ctx: &AmqpContext,
) -> Flow {
    while let Some(event) = conn.poll_event() {
        track(&places.reg, conn, &event);
        // The connection limits are checked at connection.open, as RabbitMQ
        // does: 530 NOT_ALLOWED with RabbitMQ's text.
        if matches!(event, Event::Open { .. })
            && let Err(refusal) = admit_open(conn, places, ctx)
        {
            tracing::warn!(peer = %places.peer, user = conn.user().unwrap_or(""), "AMQP connection refused: {}", refusal.text());
            conn.reject_open(reply::NOT_ALLOWED, &refusal.amqp_text());
            continue;
        }
        if session.handle_event(conn, event) == Flow::Closed {
            return Flow::Closed;
        }
    }
    Flow::Continue
}

/// Keeps the connection's registry entry up to date with what it does.
fn track(reg: &crate::registry::ConnInfo, conn: &Connection, event: &Event) {
    match event {
        Event::Publish { .. } => reg.counters.message_in(),
        Event::ChannelOpened { channel } => reg.channel_opened(*channel),
        Event::ChannelClosed { channel } => reg.channel_closed(*channel),
        Event::Open { vhost } => {
            reg.set_user(conn.user().unwrap_or(""));
            reg.set_vhost(vhost);
        }
        _ => {}
    }
}

/// Whether the connection may open: it was admitted at accept, and its user
/// is within the per-user limit (that place is held from now on).
fn admit_open(conn: &Connection, places: &mut Places, ctx: &AmqpContext) -> Result<(), Refusal> {
    if let Err(refusal) = &places.slot {
        return Err(refusal.clone());
    }
    if places.user.is_none() {
        places.user = Some(ctx.limits.admit_user(conn.user().unwrap_or(""))?);
    }
    // `track` has put this connection in its vhost already.
    let vhost = places.reg.vhost();
    ctx.limits.admit_vhost(
        &vhost,
        conn.user().unwrap_or(""),
        ctx.users.vhost_limits(&vhost).max_connections,
        true,
    )
}
