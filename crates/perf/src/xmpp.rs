//! The `xmpp` subcommand: pairs of users chatting through the server, built on the tokio-xmpp
//! client library (its `StanzaStream`: SASL, resource binding and, where the server offers it,
//! XEP-0198 stream management); throughput and end-to-end latency.
//!
//! Users `PREFIX0` … `PREFIX{2N-1}` log in over plaintext TCP (loopback only: the servers must
//! allow authentication without TLS there), send initial presence, and user 2k and 2k+1 send
//! each other `type="chat"` messages addressed to the peer's full JID. Each body starts with
//! the send time as 16 hex digits (nanoseconds since a process-wide epoch) and a run id, padded
//! to `--size`; messages of another run (held by the server and delivered at a later login)
//! are counted apart and not timed.
//!
//! Open loop (the default), each user sends as fast as the library and the server take the
//! messages, and a server that accepts faster than it delivers buffers the difference; closed
//! loop (`--max-unreceived N`), a user waits while N of its messages are still on their way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt;
use futures_util::stream::{self, FuturesUnordered};
use hdrhistogram::Histogram;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::jid::{FullJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::stanzastream::{Event, StanzaStage, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::{PendingFeaturesRecv, StreamHeader, Timeouts, initiate_stream};

use crate::common::{self, Latency, Stats, now_nanos, rate};
use crate::{XmppArgs, secs};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Length of the hex timestamp at the start of each body.
const STAMP: usize = 16;

/// Plaintext TCP to one address with Nagle's algorithm off (as the servers under test set it on
/// their side), so that small stanzas are not held back waiting for an acknowledgement.
/// tokio-xmpp's own `TcpServerConnector` leaves Nagle on.
#[derive(Debug, Clone)]
struct TcpNoDelay {
    addr: String,
}

impl ServerConnector for TcpNoDelay {
    type Stream = BufStream<TcpStream>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<
        (
            PendingFeaturesRecv<Self::Stream>,
            sasl::common::ChannelBinding,
        ),
        tokio_xmpp::Error,
    > {
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let header = StreamHeader {
            to: Some(jid.domain().as_str().into()),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
        Ok((pending, sasl::common::ChannelBinding::None))
    }
}

/// Where and as whom to connect.
pub(crate) struct XmppConnect {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The accounts' domain.
    pub domain: String,
    /// Password of every account.
    pub password: String,
    /// Outgoing and incoming stanza queue depth of each stream.
    pub queue_depth: usize,
}

/// Logs in as `user@domain/resource` and waits until the stream is bound. Returns the stream
/// and the full JID the server bound.
pub(crate) async fn connect(
    c: &XmppConnect,
    user: &str,
    resource: &str,
) -> anyhow::Result<(StanzaStream, FullJid)> {
    let jid: Jid = format!("{user}@{}/{resource}", c.domain).parse()?;
    let connector = TcpNoDelay {
        addr: format!("{}:{}", c.host, c.port),
    };
    let mut stream = StanzaStream::new_c2s(
        connector,
        jid.clone(),
        c.password.clone(),
        Timeouts::default(),
        c.queue_depth.max(1),
    );
    let bound = timeout(CONNECT_TIMEOUT, async {
        while let Some(ev) = stream.next().await {
            if let Event::Stream(StreamEvent::Reset { bound_jid, .. }) = ev {
                return Some(bound_jid);
            }
        }
        None
    })
    .await;
    let bound = match bound {
        Ok(Some(j)) => j,
        Ok(None) => bail!("{jid}: the stream ended before it was bound"),
        // tokio-xmpp retries a failed login by itself (and logs why); we give up.
        Err(_) => bail!(
            "{jid}: not logged in within {CONNECT_TIMEOUT:?} (wrong password, no account, or \
             authentication without TLS refused?)"
        ),
    };
    let full = bound
        .try_into_full()
        .map_err(|j| anyhow::anyhow!("the server bound a bare JID: {j}"))?;
    Ok((stream, full))
}

/// Reads what a server sends right after login (offline messages an earlier run left behind,
/// presence) until `quiet` passes without anything, for at most `max`; returns the messages.
async fn settle(stream: &mut StanzaStream, quiet: Duration, max: Duration) -> u64 {
    let until = Instant::now() + max;
    let mut messages = 0;
    while Instant::now() < until {
        let next = (Instant::now() + quiet).min(until);
        match tokio::time::timeout_at(next, stream.next()).await {
            Ok(Some(Event::Stanza(Stanza::Message(_)))) => messages += 1,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    messages
}

/// Closes a stream cleanly (`</stream:stream>`), bounded.
pub(crate) async fn close(stream: StanzaStream) {
    let _ = timeout(Duration::from_secs(3), stream.close()).await;
}

fn stamp_of(body: &str) -> Option<u64> {
    u64::from_str_radix(body.get(..STAMP)?, 16).ok()
}

/// End-to-end flow of one direction of a pair: how many of the sender's messages the peer has
/// received, and a wake-up for the sender when that moves.
#[derive(Default)]
struct Flow {
    delivered: AtomicU64,
    notify: Notify,
}

struct UserCfg {
    /// Marks this run's bodies (`/RUN/` after the stamp): servers keep messages a session did
    /// not acknowledge and deliver them at a later login, perhaps to a later run.
    tag: Arc<str>,
    /// Messages from another run received (not counted, not timed).
    stale: Arc<AtomicU64>,
    /// Whom to send to, if this user sends.
    peer: Option<FullJid>,
    /// Deliveries of this user's messages (bumped by the peer).
    flow_out: Arc<Flow>,
    /// Deliveries of the peer's messages (bumped by this user).
    flow_in: Arc<Flow>,
    /// With `--max-unreceived`: most messages sent and not yet received by the peer.
    max_unreceived: Option<u64>,
    size: usize,
    rate: f64,
    window: usize,
    warmup_until: u64,
    /// Messages handed to the stream, over all users.
    requested: Arc<AtomicU64>,
}

/// One user's stream: sends to its peer until `deadline` (at most `window` messages queued in
/// the library and not yet written), receives and times its peer's messages until `stop`.
async fn user(
    mut stream: StanzaStream,
    cfg: UserCfg,
    stats: Arc<Stats>,
    start: Instant,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Histogram<u64>, StanzaStream) {
    let mut hist = common::histogram();
    let mut inflight = FuturesUnordered::new();
    let pad = format!(
        "{}{}",
        cfg.tag,
        "x".repeat(cfg.size.saturating_sub(STAMP + cfg.tag.len()))
    );
    let mut n: u64 = 0;
    let mut sending = cfg.peer.is_some();
    loop {
        // Checked here too: a busy receive branch must not keep the deadline branch from firing.
        if sending && Instant::now() >= deadline {
            sending = false;
        }
        let due = (cfg.rate > 0.0).then(|| start + Duration::from_secs_f64(n as f64 / cfg.rate));
        let window_full = cfg
            .max_unreceived
            .is_some_and(|max| n.saturating_sub(cfg.flow_out.delivered.load(Relaxed)) >= max);
        let can_send = sending && inflight.len() < cfg.window.max(1) && !window_full;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            ev = stream.next() => match ev {
                Some(Event::Stanza(Stanza::Message(m))) => {
                    if let Some(body) = m.bodies.values().next()
                        && let Some(ts) = stamp_of(body)
                    {
                        if body.get(STAMP..).is_none_or(|rest| !rest.starts_with(&*cfg.tag)) {
                            cfg.stale.fetch_add(1, Relaxed);
                            continue;
                        }
                        if ts >= cfg.warmup_until {
                            hist.saturating_record(now_nanos().saturating_sub(ts).max(1));
                        }
                        stats.received.fetch_add(1, Relaxed);
                        cfg.flow_in.delivered.fetch_add(1, Relaxed);
                        cfg.flow_in.notify.notify_one();
                    }
                }
                Some(Event::Stanza(_)) => {}
                Some(Event::Stream(e)) => {
                    stats.error("stream", format!("{e:?} (a reconnect: the connection was lost)"));
                }
                None => {
                    stats.error("stream", "ended");
                    break;
                }
            },
            Some(state) = inflight.next(), if !inflight.is_empty() => match state {
                Some(tokio_xmpp::stanzastream::StanzaState::Sent { .. })
                | Some(tokio_xmpp::stanzastream::StanzaState::Acked { .. }) => {
                    stats.sent.fetch_add(1, Relaxed);
                }
                other => {
                    stats.error("send", format!("{other:?}"));
                    sending = false;
                }
            },
            _ = sleep_until(deadline), if sending => sending = false,
            _ = cfg.flow_out.notify.notified(), if sending && window_full => {}
            _ = async { if let Some(d) = due { sleep_until(d).await } }, if can_send => {
                let Some(peer) = &cfg.peer else { continue };
                let body = format!("{:016x}{pad}", now_nanos());
                let msg = Message::new_with_type(MessageType::Chat, Some(Jid::from(peer.clone())))
                    .with_body(Lang::new(), body);
                let mut token = stream.send(Box::new(Stanza::Message(msg))).await;
                cfg.requested.fetch_add(1, Relaxed);
                inflight.push(async move { token.wait_for(StanzaStage::Sent).await });
                n += 1;
            }
        }
    }
    (hist, stream)
}

/// The `xmpp` subcommand; returns the exit code (0: no errors, everything sent was received).
pub(crate) async fn run(args: XmppArgs) -> anyhow::Result<i32> {
    now_nanos(); // fix the epoch
    let stats = Arc::new(Stats::default());
    let conn = Arc::new(XmppConnect {
        host: args.host.clone(),
        port: args.port,
        domain: args.domain.clone(),
        password: args.password.clone(),
        queue_depth: args.window.max(1) + 16,
    });
    let users = args.pairs * 2;
    let names: Vec<String> = (0..users)
        .map(|i| format!("{}{i}", args.user_prefix))
        .collect();
    let mut opened: Vec<Option<(StanzaStream, FullJid)>> = (0..users).map(|_| None).collect();
    let mut connecting = stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let conn = conn.clone();
            async move { (i, connect(&conn, name, "perf").await) }
        })
        .buffer_unordered(args.concurrency.max(1));
    while let Some((i, res)) = connecting.next().await {
        opened[i] = Some(res?);
    }
    drop(connecting);
    let mut streams = Vec::with_capacity(users);
    let mut jids = Vec::with_capacity(users);
    for (stream, jid) in opened.into_iter().flatten() {
        streams.push(stream);
        jids.push(jid);
    }
    // Initial presence, as a chat client sends it; then what the servers deliver for it
    // (offline messages of an earlier run) is read before the clock starts.
    for s in &streams {
        let _token = s
            .send(Box::new(Stanza::Presence(Presence::available())))
            .await;
    }
    let settled: u64 = futures_util::future::join_all(
        streams
            .iter_mut()
            .map(|s| settle(s, Duration::from_millis(500), Duration::from_secs(15))),
    )
    .await
    .into_iter()
    .sum();

    if args.size < STAMP {
        eprintln!(
            "note: --size {} is below {STAMP}; sending {STAMP}-character bodies",
            args.size
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let requested = Arc::new(AtomicU64::new(0));
    let warmup_until = now_nanos() + secs(args.warmup).as_nanos() as u64;
    let start = Instant::now();
    let deadline = start + secs(args.duration);
    let tag: Arc<str> = format!("/{}/", common::run_id()).into();
    let stale = Arc::new(AtomicU64::new(settled));
    let flows: Vec<Arc<Flow>> = (0..users).map(|_| Arc::new(Flow::default())).collect();
    let mut tasks = Vec::with_capacity(users);
    for (i, stream) in streams.into_iter().enumerate() {
        let peer_idx = i ^ 1;
        let sends = !args.one_way || i % 2 == 0;
        let cfg = UserCfg {
            tag: tag.clone(),
            stale: stale.clone(),
            peer: sends.then(|| jids[peer_idx].clone()),
            flow_out: flows[i].clone(),
            flow_in: flows[peer_idx].clone(),
            max_unreceived: args.max_unreceived.filter(|&m| m > 0),
            size: args.size.max(STAMP),
            rate: args.rate,
            window: args.window,
            warmup_until,
            requested: requested.clone(),
        };
        tasks.push(tokio::spawn(user(
            stream,
            cfg,
            stats.clone(),
            start,
            deadline,
            stop_rx.clone(),
        )));
    }
    let (progress_done, progress) = common::spawn_progress(stats.clone(), start, args.quiet, None);

    sleep_until(deadline).await;
    let window = start.elapsed().as_secs_f64();
    let at_deadline = stats.snapshot();

    // Drain: the messages still queued in the library, then the receivers catching up; bounded
    // by the drain timeout, and by 2 s without progress.
    let drain_deadline = Instant::now() + secs(args.drain_timeout);
    let flushed = loop {
        let now = stats.snapshot();
        if now.sent >= requested.load(Relaxed) {
            break true;
        }
        if Instant::now() >= drain_deadline || now.errors > at_deadline.errors {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Open loop, a server may stop reading a sender for a while (its own backpressure): the
    // messages still queued in the library then were never sent. Not an error; reported.
    let unwritten = if flushed {
        0
    } else {
        requested
            .load(Relaxed)
            .saturating_sub(stats.sent.load(Relaxed))
    };
    let drained = common::drain(
        &stats,
        || stats.sent.load(Relaxed),
        Duration::from_secs(2),
        drain_deadline,
    )
    .await;
    let total_elapsed = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    progress_done.store(true, Relaxed);
    let mut hist = common::histogram();
    let mut streams = Vec::new();
    for t in tasks {
        match timeout(Duration::from_secs(5), t).await {
            Ok(Ok((h, s))) => {
                hist.add(&h)?;
                streams.push(s);
            }
            Ok(Err(e)) => stats.error("user task", e),
            Err(_) => stats.error("user", "did not stop"),
        }
    }
    progress.abort();
    let end = stats.snapshot();
    futures_util::future::join_all(streams.into_iter().map(close)).await;

    let not_received = if drained {
        0
    } else {
        end.sent.saturating_sub(end.received)
    };
    let first_error = stats.first_error();
    let lat = Latency::of(&hist);
    println!(
        "summary: XMPP, {} pairs{}{}, body {} chars{}, duration {window:.1}s",
        args.pairs,
        if args.one_way { " (one way)" } else { "" },
        match args.max_unreceived {
            Some(m) => format!(", at most {m} unreceived per sender"),
            None => String::new(),
        },
        args.size.max(STAMP),
        if args.rate > 0.0 {
            format!(", rate {}/s per sender", args.rate)
        } else {
            String::new()
        },
    );
    println!(
        "sent {} msg/s ({} msgs), received {} msg/s ({} msgs in the window, {} in all)",
        rate(at_deadline.sent, window).round(),
        end.sent,
        rate(at_deadline.received, window).round(),
        at_deadline.received,
        end.received,
    );
    println!("{}", lat.line());
    if unwritten > 0 {
        println!(
            "{unwritten} messages still queued in the client library at the drain timeout (never sent)"
        );
    }
    let stale = stale.load(Relaxed);
    if stale > 0 {
        println!("{stale} messages from an earlier run received (not counted, not timed)");
    }
    println!(
        "errors {}{}{}",
        end.errors,
        if drained {
            String::new()
        } else {
            format!(", {not_received} messages not received by the end of the drain")
        },
        match &first_error {
            Some(e) => format!(" (first: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let mut obj = serde_json::Map::new();
        if let serde_json::Value::Object(m) = serde_json::json!({
            "protocol": "xmpp",
            "pairs": args.pairs,
            "one_way": args.one_way,
            "max_unreceived": args.max_unreceived,
            "stale": stale,
            "unwritten": unwritten,
            "senders": if args.one_way { args.pairs } else { users },
            "size": args.size.max(STAMP),
            "rate": args.rate,
            "duration_s": window,
            "elapsed_s": total_elapsed,
            "sent": end.sent,
            "received": end.received,
            "confirmed": 0,
            "sent_rate": rate(at_deadline.sent, window),
            "received_rate": rate(at_deadline.received, window),
            "confirmed_rate": 0.0,
            "drained": drained,
            "not_drained": not_received,
            "errors": end.errors,
            "first_error": first_error,
        }) {
            obj.extend(m);
        }
        lat.add_json(&mut obj);
        println!("{}", serde_json::Value::Object(obj));
    }
    let ok = end.errors == 0 && end.sent > 0 && drained;
    Ok(if ok { 0 } else { 1 })
}
