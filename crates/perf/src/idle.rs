//! The `idle` subcommand: open N AMQP, MQTT or XMPP connections, hold them, close them.
//!
//! For memory-per-connection measurements: read the broker's memory once the line
//! `all connections open` has been printed, while the connections are held.
//!
//! MQTT connections are rumqttc clients (clean session, keep alive 60 s, no subscription);
//! XMPP connections are tokio-xmpp streams (logged in and bound, no presence), spread over
//! `--users` accounts with one resource per connection.
//!
//! By default each connection is a minimal hand-written AMQP 0-9-1 handshake on a tokio task
//! (header, start-ok PLAIN, tune-ok, open, heartbeats), so that ten thousand connections cost the
//! load generator little; `--lapin` uses the lapin client instead (one IO thread and several
//! megabytes per connection).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use crate::amqp::connect;
use crate::{IdleArgs, IdleProtocol, secs};

/// The `idle` subcommand; returns the exit code (0: every connection opened and held).
pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let open_deadline = started + secs(args.open_timeout);
    let uri = args.uri.clone();
    let want_channel = args.channel;
    let mut conns: Vec<(Connection, Option<Channel>)> = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;

    match args.protocol {
        IdleProtocol::Mqtt => {
            return match &args.source_addrs {
                Some(list) => {
                    let sources = crate::rawmqtt::parse_addrs(list)?;
                    anyhow::ensure!(!sources.is_empty(), "--source-addrs: no address given");
                    hold_tasks(&args, crate::rawmqtt::opener(&args, sources)).await
                }
                None => hold_tasks(&args, mqtt_opener(&args)).await,
            };
        }
        IdleProtocol::Xmpp => return hold_tasks(&args, xmpp_opener(&args)).await,
        IdleProtocol::Amqp if !args.lapin => return crate::raw::run(args).await,
        IdleProtocol::Amqp => {}
    }
    let mut opening = stream::iter(0..args.connections)
        .map(|i| {
            let uri = uri.clone();
            async move {
                let conn = connect(&uri, &format!("tributary-perf idle {i}")).await?;
                let ch = if want_channel {
                    Some(conn.create_channel().await?)
                } else {
                    None
                };
                anyhow::Ok((conn, ch))
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut next_report = started + Duration::from_secs(1);
    loop {
        let next = tokio::select! {
            n = opening.next() => n,
            _ = sleep_until(open_deadline) => {
                eprintln!("open timeout reached");
                break;
            }
        };
        match next {
            None => break,
            Some(Ok(c)) => conns.push(c),
            Some(Err(e)) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
            }
        }
        if Instant::now() >= next_report {
            eprintln!("opened {} connections, {} failed", conns.len(), failed);
            next_report += Duration::from_secs(1);
        }
    }
    drop(opening);
    let open_secs = started.elapsed().as_secs_f64();
    println!(
        "all connections open: {} open, {} failed, in {:.2}s; holding for {:.0}s (pid {})",
        conns.len(),
        failed,
        open_secs,
        args.duration,
        std::process::id()
    );
    let hold_until = Instant::now() + secs(args.duration);
    let mut last_report = Instant::now();
    while Instant::now() < hold_until {
        sleep_until(hold_until.min(Instant::now() + Duration::from_secs(5))).await;
        let alive = conns.iter().filter(|(c, _)| c.status().connected()).count();
        if last_report.elapsed() >= Duration::from_secs(5) || Instant::now() >= hold_until {
            eprintln!("holding: {alive} of {} connections still open", conns.len());
            last_report = Instant::now();
        }
    }
    let alive = conns.iter().filter(|(c, _)| c.status().connected()).count();
    let closing = stream::iter(conns.iter())
        .map(|(c, _)| async move {
            let _ = timeout(Duration::from_secs(5), c.close(200, "bye".into())).await;
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect::<Vec<_>>();
    let _ = timeout(Duration::from_secs(30), closing).await;

    println!(
        "summary: {} connections opened ({} failed) in {:.2}s, {} still open at the end{}",
        conns.len(),
        failed,
        open_secs,
        alive,
        match &first_error {
            Some(e) => format!(" (first error: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let json = serde_json::json!({
            "connections": args.connections,
            "opened": conns.len(),
            "failed": failed,
            "open_s": open_secs,
            "alive_at_end": alive,
            "held_s": args.duration,
            "first_error": first_error,
        });
        println!("{json}");
    }
    Ok(if failed == 0 && alive == conns.len() {
        0
    } else {
        1
    })
}

/// A connection held by a task: the task ends when the connection is lost, or closes it
/// cleanly and ends once `stop` changes.
pub(crate) type Held = tokio::task::JoinHandle<()>;

fn mqtt_opener(
    args: &IdleArgs,
) -> impl Fn(usize, watch::Receiver<bool>) -> BoxFuture<'static, anyhow::Result<Held>> + use<> {
    let conn = Arc::new(crate::mqtt::MqttConnect {
        host: args.host.clone(),
        port: args.port.unwrap_or(1883),
        username: None,
        password: None,
        version: args.mqtt_version,
        keep_alive: 60,
        inflight: 16,
        max_packet: 4096,
    });
    let run = crate::common::run_id();
    move |i, mut stop| {
        let conn = conn.clone();
        let id = format!("tperf-idle-{run}-{i}");
        Box::pin(async move {
            let (client, mut ev) = crate::mqtt::connect(&conn, &id, 4).await?;
            Ok(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        e = ev.poll(0) => if e.is_err() { return; },
                    }
                }
                let _ = timeout(Duration::from_secs(2), async {
                    client.disconnect().await;
                    while ev.poll(0).await.is_ok() {}
                })
                .await;
            }))
        })
    }
}

fn xmpp_opener(
    args: &IdleArgs,
) -> impl Fn(usize, watch::Receiver<bool>) -> BoxFuture<'static, anyhow::Result<Held>> + use<> {
    let conn = Arc::new(crate::xmpp::XmppConnect {
        host: args.host.clone(),
        port: args.port.unwrap_or(5222),
        domain: args.domain.clone(),
        password: args.password.clone(),
        queue_depth: 4,
    });
    let users = args.users.max(1);
    let prefix = args.user_prefix.clone();
    move |i, mut stop| {
        let conn = conn.clone();
        let user = format!("{prefix}{}", i % users);
        Box::pin(async move {
            // No presence: with many resources per account, each initial presence would go to
            // every other resource of the account, and the connections would not be idle.
            let (mut stream, _jid) =
                crate::xmpp::connect(&conn, &user, &format!("idle{i}")).await?;
            Ok(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        ev = stream.next() => match ev {
                            // A reconnect (the connection was lost) ends the hold.
                            Some(tokio_xmpp::stanzastream::Event::Stream(_)) | None => return,
                            Some(_) => {}
                        },
                    }
                }
                crate::xmpp::close(stream).await;
            }))
        })
    }
}

/// Opens `args.connections` connections with `open` (at most `args.concurrency` at once),
/// holds them for `args.duration`, then closes them and reports.
async fn hold_tasks<F>(args: &IdleArgs, open: F) -> anyhow::Result<i32>
where
    F: Fn(usize, watch::Receiver<bool>) -> BoxFuture<'static, anyhow::Result<Held>>,
{
    let started = Instant::now();
    let open_deadline = started + secs(args.open_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut held: Vec<Held> = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    let mut opening = stream::iter(0..args.connections)
        .map(|i| open(i, stop_rx.clone()))
        .buffer_unordered(args.concurrency.max(1));
    let mut next_report = started + Duration::from_secs(1);
    loop {
        let next = tokio::select! {
            n = opening.next() => n,
            _ = sleep_until(open_deadline) => {
                eprintln!("open timeout reached");
                break;
            }
        };
        match next {
            None => break,
            Some(Ok(h)) => held.push(h),
            Some(Err(e)) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
            }
        }
        if Instant::now() >= next_report {
            eprintln!("opened {} connections, {} failed", held.len(), failed);
            next_report += Duration::from_secs(1);
        }
    }
    drop(opening);
    let opened = held.len();
    let open_secs = started.elapsed().as_secs_f64();
    println!(
        "all connections open: {opened} open, {failed} failed, in {open_secs:.2}s; holding for {:.0}s (pid {})",
        args.duration,
        std::process::id()
    );
    let alive = |held: &[Held]| held.iter().filter(|h| !h.is_finished()).count();
    let hold_until = Instant::now() + secs(args.duration);
    while Instant::now() < hold_until {
        sleep_until(hold_until.min(Instant::now() + Duration::from_secs(5))).await;
        eprintln!(
            "holding: {} of {opened} connections still open",
            alive(&held)
        );
    }
    let alive_at_end = alive(&held);
    let _ = stop_tx.send(true);
    if timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(held),
    )
    .await
    .is_err()
    {
        eprintln!("some connections did not close within 30s");
    }
    println!(
        "summary: {opened} {} connections opened ({failed} failed) in {open_secs:.2}s, {alive_at_end} still open at the end{}",
        args.protocol.name(),
        match &first_error {
            Some(e) => format!(" (first error: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let json = serde_json::json!({
            "protocol": args.protocol.name(),
            "connections": args.connections,
            "opened": opened,
            "failed": failed,
            "open_s": open_secs,
            "alive_at_end": alive_at_end,
            "held_s": args.duration,
            "first_error": first_error,
        });
        println!("{json}");
    }
    Ok(if failed == 0 && alive_at_end == opened {
        0
    } else {
        1
    })
}
