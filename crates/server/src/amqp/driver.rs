//! The IO driver of one AMQP connection: feeds socket bytes to the sans-IO
//! machine, runs the session, and writes what the machine produced, flushing
//! once per wake-up rather than once per frame.

use super::consumer::Outbound;
use super::session::{Flow, Session};
use crate::users::UserDb;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_amqp::{Connection, ConnectionConfig, reply};
use tributary_core::Broker;

/// Stop reading from the socket while this much output waits to be written.
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Queue deliveries handled per wake-up before the socket gets a turn.
const DELIVERY_BUDGET: usize = 256;
/// How often a connection blocked by the inline memory check looks again.
const FLOW_RECHECK: Duration = Duration::from_millis(50);
/// First read buffer of a connection.
const READ_CHUNK_MIN: usize = 4096;
/// Largest read chunk a busy connection grows to.
const READ_CHUNK_MAX: usize = 64 * 1024;
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
}

/// Runs one connection to its end.
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Arc<AmqpContext>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
    let mut conn = Connection::new(ctx.config.clone(), Instant::now());
    let mut session = Session::new(ctx.broker.clone(), ctx.users.clone(), peer, tx);
    // Small to start with, so idle connections stay cheap; busy ones grow.
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK_MIN);
    let mut outbuf = BytesMut::new();
    let mut shutting_down = false;
    let mut shutdown_deadline: Option<tokio::time::Instant> = None;
    let mut closed = false;
    let mut flow = ctx.flow.clone();
    let mut blocked_sent = false;

    loop {
        if process_events(&mut conn, &mut session) == Flow::Closed {
            closed = true;
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
        let can_read = outbuf.len() < WRITE_HIGH_WATER && !flow_blocked;
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
            r = wr.write_buf(&mut outbuf), if !outbuf.is_empty() => {
                if r.is_err() { break; }
            }
            r = rd.read_buf(&mut inbuf), if can_read => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => conn.handle_input(&mut inbuf, Instant::now()),
                }
                if inbuf.capacity() - inbuf.len() < READ_CHUNK_MIN {
                    // A full buffer means a busy peer: read bigger chunks.
                    let grow = if inbuf.capacity() >= READ_CHUNK_MAX / 2 { READ_CHUNK_MAX } else { inbuf.capacity() * 2 };
                    inbuf.reserve(grow);
                }
            }
            Some(first) = rx.recv(), if outbuf.len() < WRITE_HIGH_WATER => {
                session.handle_outbound(&mut conn, first);
                for _ in 1..DELIVERY_BUDGET {
                    match rx.try_recv() {
                        Ok(next) => session.handle_outbound(&mut conn, next),
                        Err(_) => break,
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
    let _ = wr.shutdown().await;
    session.close_all();
    // Deliveries still in flight go back to their queues.
    rx.close();
    while let Ok(out) = rx.try_recv() {
        session.handle_outbound(&mut conn, out);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn process_events(conn: &mut Connection, session: &mut Session) -> Flow {
    while let Some(event) = conn.poll_event() {
        if session.handle_event(conn, event) == Flow::Closed {
            return Flow::Closed;
        }
    }
    Flow::Continue
}
