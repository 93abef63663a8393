//! A minimal MQTT 3.1.1 client for `idle --source-addrs`: CONNECT (clean session, keep alive
//! 60 s, anonymous), PINGREQ every keep alive, DISCONNECT at the end. It exists for the scale
//! run: one loopback source address has about 28,000 ephemeral ports towards one server port,
//! so 100,000 connections need several 127.0.0.x source addresses, and rumqttc cannot bind a
//! source address. One small tokio task per connection, no buffers held while idle.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::IdleArgs;
use crate::idle::Held;

/// The keep alive the connections announce; a PINGREQ goes out at this interval.
const KEEP_ALIVE: u16 = 60;
/// Time allowed for the TCP connect and the CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses `--source-addrs`: a comma list of IP addresses.
pub(crate) fn parse_addrs(list: &str) -> anyhow::Result<Vec<IpAddr>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpAddr>()
                .with_context(|| format!("--source-addrs: {s:?} is not an IP address"))
        })
        .collect()
}

/// The CONNECT packet of a clean MQTT 3.1.1 session without credentials.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    let remaining = 10 + 2 + id.len();
    let mut p = Vec::with_capacity(2 + remaining);
    p.push(0x10);
    // Remaining length (client ids here are short: one or two bytes).
    let mut n = remaining;
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        p.push(byte);
        if n == 0 {
            break;
        }
    }
    p.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02]);
    p.extend_from_slice(&KEEP_ALIVE.to_be_bytes());
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id);
    p
}

/// Opens connection `i` from source address `i mod len(sources)`.
pub(crate) fn opener(
    args: &IdleArgs,
    sources: Vec<IpAddr>,
) -> impl Fn(usize, watch::Receiver<bool>) -> BoxFuture<'static, anyhow::Result<Held>> + use<> {
    let server: Arc<str> = format!("{}:{}", args.host, args.port.unwrap_or(1883)).into();
    let sources = Arc::new(sources);
    let run = crate::common::run_id();
    move |i, mut stop| {
        let server = server.clone();
        let source = sources[i % sources.len()];
        let id = format!("tperf-raw-{run}-{i}");
        Box::pin(async move {
            let addr: SocketAddr = tokio::net::lookup_host(&*server)
                .await?
                .next()
                .with_context(|| format!("{server} does not resolve"))?;
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket
                .bind(SocketAddr::new(source, 0))
                .with_context(|| format!("binding to {source}"))?;
            let mut stream = timeout(CONNECT_TIMEOUT, socket.connect(addr))
                .await
                .with_context(|| format!("no TCP connection to {addr} within {CONNECT_TIMEOUT:?}"))?
                .with_context(|| format!("connecting to {addr} from {source}"))?;
            stream.set_nodelay(true)?;
            stream.write_all(&connect_packet(&id)).await?;
            let mut connack = [0u8; 4];
            timeout(CONNECT_TIMEOUT, stream.read_exact(&mut connack))
                .await
                .context("no CONNACK in time")??;
            if connack[0] != 0x20 || connack[3] != 0 {
                bail!("CONNACK refused the connection: {connack:02x?}");
            }
            Ok(tokio::spawn(async move {
                let mut ping = tokio::time::interval(Duration::from_secs(KEEP_ALIVE.into()));
                ping.tick().await;
                let mut byte = [0u8; 1];
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = ping.tick() => {
                            if stream.write_all(&[0xC0, 0]).await.is_err() {
                                return;
                            }
                        }
                        // PINGRESPs (two bytes each) are read a byte at a time; the end of the
                        // stream or an error ends the hold.
                        r = stream.read(&mut byte) => {
                            if !matches!(r, Ok(1)) {
                                return;
                            }
                        }
                    }
                }
                let _ = timeout(Duration::from_secs(2), async {
                    let _ = stream.write_all(&[0xE0, 0]).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_well_formed() {
        let p = connect_packet("abc");
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[2..10], &[0, 4, b'M', b'Q', b'T', b'T', 4, 2]);
        assert_eq!(&p[10..12], &60u16.to_be_bytes());
        assert_eq!(&p[12..], &[0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn source_addresses_parse() {
        let a = parse_addrs("127.0.0.1, 127.0.0.2,").unwrap();
        assert_eq!(a.len(), 2);
        assert!(parse_addrs("127.0.0.1,nope").is_err());
    }
}
