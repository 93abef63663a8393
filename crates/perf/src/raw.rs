//! A minimal AMQP 0-9-1 client for `idle`: enough of the protocol to open a connection (and
//! optionally one channel), keep it alive with heartbeats, and close it cleanly. One tokio task
//! and a few kilobytes per connection, so that the load generator can hold many thousands.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::StreamExt;
use futures_util::stream;
use lapin::uri::AMQPUri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::{IdleArgs, secs};

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;
const HEARTBEAT: [u8; 8] = [8, 0, 0, 0, 0, 0, 0, FRAME_END];
const MAX_FRAME: usize = 1 << 20;

fn shortstr(buf: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = b.len().min(255);
    buf.push(n as u8);
    buf.extend_from_slice(&b[..n]);
}

fn longstr(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
    buf.extend_from_slice(b);
}

fn method_frame(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(12 + args.len());
    f.push(FRAME_METHOD);
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&((4 + args.len()) as u32).to_be_bytes());
    f.extend_from_slice(&class.to_be_bytes());
    f.extend_from_slice(&method.to_be_bytes());
    f.extend_from_slice(args);
    f.push(FRAME_END);
    f
}

fn close_frame(channel: u16, class: u16, method: u16) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&200u16.to_be_bytes());
    shortstr(&mut a, "bye");
    a.extend_from_slice(&0u16.to_be_bytes());
    a.extend_from_slice(&0u16.to_be_bytes());
    method_frame(channel, class, method, &a)
}

struct Frame {
    kind: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn method(&self) -> Option<(u16, u16)> {
        (self.kind == FRAME_METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }

    /// Reply code and text of a connection.close or channel.close.
    fn close_reason(&self) -> String {
        let p = &self.payload;
        if p.len() < 7 {
            return "closed".into();
        }
        let code = u16::from_be_bytes([p[4], p[5]]);
        let n = usize::from(p[6]);
        let text = p
            .get(7..7 + n)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        format!("{code} {text}")
    }
}

async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> io::Result<Frame> {
    let mut h = [0u8; 7];
    rd.read_exact(&mut h).await?;
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    if size > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; size + 1];
    rd.read_exact(&mut payload).await?;
    if payload[size] != FRAME_END {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame end"));
    }
    payload.truncate(size);
    Ok(Frame {
        kind: h[0],
        payload,
    })
}

/// Reads frames until the method `want` arrives (skipping heartbeats); a close is an error.
async fn expect<R: AsyncReadExt + Unpin>(rd: &mut R, want: (u16, u16)) -> anyhow::Result<Frame> {
    loop {
        let f = read_frame(rd).await?;
        match f.method() {
            Some(m) if m == want => return Ok(f),
            Some((10, 50)) => bail!("connection closed by the broker: {}", f.close_reason()),
            Some((20, 40)) => bail!("channel closed by the broker: {}", f.close_reason()),
            Some(m) => bail!("expected method {want:?}, got {m:?}"),
            None => continue,
        }
    }
}

struct Target {
    addr: String,
    username: String,
    password: String,
    vhost: String,
    heartbeat: Option<u16>,
}

/// Handshake: protocol header, start/start-ok (PLAIN), tune/tune-ok, open/open-ok.
async fn open(t: &Target, channel: bool) -> anyhow::Result<(TcpStream, u16)> {
    let mut s = TcpStream::connect(&t.addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    expect(&mut s, (10, 10)).await?;

    let mut a = Vec::new();
    let mut props = Vec::new();
    shortstr(&mut props, "product");
    props.push(b'S');
    longstr(&mut props, b"tributary-perf idle");
    longstr(&mut a, &props);
    shortstr(&mut a, "PLAIN");
    let mut resp = vec![0u8];
    resp.extend_from_slice(t.username.as_bytes());
    resp.push(0);
    resp.extend_from_slice(t.password.as_bytes());
    longstr(&mut a, &resp);
    shortstr(&mut a, "en_US");
    s.write_all(&method_frame(0, 10, 11, &a)).await?;

    let tune = expect(&mut s, (10, 30)).await?;
    let p = &tune.payload;
    if p.len() < 12 {
        bail!("short connection.tune");
    }
    let channel_max = u16::from_be_bytes([p[4], p[5]]);
    let frame_max = u32::from_be_bytes([p[6], p[7], p[8], p[9]]);
    let server_hb = u16::from_be_bytes([p[10], p[11]]);
    let heartbeat = t.heartbeat.unwrap_or(server_hb);
    let mut a = Vec::new();
    a.extend_from_slice(&channel_max.to_be_bytes());
    a.extend_from_slice(&frame_max.to_be_bytes());
    a.extend_from_slice(&heartbeat.to_be_bytes());
    s.write_all(&method_frame(0, 10, 31, &a)).await?;

    let mut a = Vec::new();
    shortstr(&mut a, &t.vhost);
    shortstr(&mut a, "");
    a.push(0);
    s.write_all(&method_frame(0, 10, 40, &a)).await?;
    expect(&mut s, (10, 41)).await?;

    if channel {
        s.write_all(&method_frame(1, 20, 10, &[0])).await?;
        expect(&mut s, (20, 11)).await?;
    }
    Ok((s, heartbeat))
}

/// Holds an open connection: heartbeats out, frames in, until told to stop or the broker closes.
async fn hold(stream: TcpStream, heartbeat: u16, mut stop: watch::Receiver<bool>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    let writer = tokio::spawn(async move {
        let period = Duration::from_secs(u64::from(heartbeat.max(1))) / 2;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = tick.tick(), if heartbeat > 0 => {
                    if wr.write_all(&HEARTBEAT).await.is_err() { break; }
                }
                m = rx.recv() => match m {
                    Some(buf) => { if wr.write_all(&buf).await.is_err() { break; } }
                    None => break,
                },
                r = stop.changed(), if !stopping => {
                    stopping = true;
                    if r.is_err() || wr.write_all(&close_frame(0, 10, 50)).await.is_err() { break; }
                }
            }
        }
    });
    read_until_closed(&mut rd, &tx).await;
    drop(tx);
    let _ = timeout(Duration::from_secs(2), writer).await;
}

async fn read_until_closed(rd: &mut OwnedReadHalf, tx: &mpsc::Sender<Vec<u8>>) {
    while let Ok(f) = read_frame(rd).await {
        match f.method() {
            Some((10, 50)) => {
                let _ = tx.send(method_frame(0, 10, 51, &[])).await;
                return;
            }
            Some((10, 51)) => return,
            _ => {}
        }
    }
}

/// `idle --protocol amqp` with the built-in client; returns the exit code.
pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<i32> {
    let uri: AMQPUri = args
        .uri
        .parse()
        .map_err(|e: String| anyhow!(e))
        .context("parsing --uri")?;
    let target = Arc::new(Target {
        addr: format!("{}:{}", uri.authority.host, uri.authority.port),
        username: uri.authority.userinfo.username.clone(),
        password: uri.authority.userinfo.password.clone(),
        vhost: uri.vhost.clone(),
        heartbeat: uri.query.heartbeat,
    });
    let started = Instant::now();
    let open_deadline = started + secs(args.open_timeout);
    let (stop_tx, stop_rx) = watch::channel(false);
    let alive = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(args.connections);
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    let channel = args.channel;

    let mut opening = stream::iter(0..args.connections)
        .map(|_| {
            let target = target.clone();
            async move {
                match timeout(Duration::from_secs(15), open(&target, channel)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow!("handshake timed out")),
                }
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
            Some(Ok((stream, hb))) => {
                alive.fetch_add(1, Relaxed);
                let alive = alive.clone();
                let stop = stop_rx.clone();
                tasks.push(tokio::spawn(async move {
                    hold(stream, hb, stop).await;
                    alive.fetch_sub(1, Relaxed);
                }));
            }
            Some(Err(e)) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(format!("{e:#}"));
                }
            }
        }
        if Instant::now() >= next_report {
            eprintln!("opened {} connections, {} failed", tasks.len(), failed);
            next_report += Duration::from_secs(1);
        }
    }
    drop(opening);
    let opened = tasks.len();
    let open_secs = started.elapsed().as_secs_f64();
    println!(
        "all connections open: {opened} open, {failed} failed, in {open_secs:.2}s; holding for {:.0}s (pid {})",
        args.duration,
        std::process::id()
    );
    let hold_until = Instant::now() + secs(args.duration);
    while Instant::now() < hold_until {
        sleep_until(hold_until.min(Instant::now() + Duration::from_secs(5))).await;
        eprintln!(
            "holding: {} of {opened} connections still open",
            alive.load(Relaxed)
        );
    }
    let alive_at_end = alive.load(Relaxed);
    let _ = stop_tx.send(true);
    let closing = futures_util::future::join_all(tasks);
    if timeout(Duration::from_secs(30), closing).await.is_err() {
        eprintln!("some connections did not close within 30s");
    }

    println!(
        "summary: {opened} connections opened ({failed} failed) in {open_secs:.2}s, {alive_at_end} still open at the end{}",
        match &first_error {
            Some(e) => format!(" (first error: {e})"),
            None => String::new(),
        }
    );
    if args.json {
        let json = serde_json::json!({
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
