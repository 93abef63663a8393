//! The `idle` subcommand: open N AMQP connections, hold them, close them.
//!
//! For memory-per-connection measurements: read the broker's memory once the line
//! `all connections open` has been printed, while the connections are held.
//!
//! By default each connection is a minimal hand-written AMQP 0-9-1 handshake on a tokio task
//! (header, start-ok PLAIN, tune-ok, open, heartbeats), so that ten thousand connections cost the
//! load generator little; `--lapin` uses the lapin client instead (one IO thread and several
//! megabytes per connection).

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use lapin::{Channel, Connection};
use tokio::time::{Instant, sleep_until, timeout};

use crate::amqp::connect;
use crate::{IdleArgs, secs};

pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<i32> {
    let started = Instant::now();
    let open_deadline = started + secs(args.open_timeout);
    let uri = args.uri.clone();
    let want_channel = args.channel;
    let mut conns: Vec<(Connection, Option<Channel>)> = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;

    if !args.lapin {
        return crate::raw::run(args).await;
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
