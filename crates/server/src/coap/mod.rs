//! CoAP at the edge (RFC 7252 with Observe and block-wise transfers): a
//! device publishes to and observes the topics MQTT clients use, through
//! `amq.topic`, as EMQX's CoAP gateway allows. One task per listener owns
//! every peer's [`tributary_coap::Endpoint`]; resources live under
//! `/ps/<topic>` (docs/coap.md).

pub mod coaps;
mod content;
pub mod dtls;
pub mod observations;
mod resources;
mod server;

use crate::config::CoapConfig;
use crate::limits::Limits;
use crate::registry::Transport;
use crate::users::UserDb;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tributary_core::Broker;

pub use observations::{ObservationInfo, Observations};
pub use server::Server;

/// How often retransmissions, expiries and idle peers are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Largest datagram read (UDP's own limit).
const MAX_DATAGRAM: usize = 65_535;

/// Everything the CoAP listeners need from the broker.
pub struct CoapContext {
    /// The core.
    pub broker: Arc<Broker>,
    /// Accounts and permissions.
    pub users: Arc<UserDb>,
    /// Retained messages, shared with MQTT.
    pub retained: crate::mqtt::RetainedMap,
    /// `[coap]`.
    pub config: CoapConfig,
    /// The connection registry (peers appear as connections).
    pub limits: Arc<Limits>,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// Live observations, for the management API.
    pub observations: Observations,
}

/// Serves CoAP over a bound UDP socket until shutdown.
pub async fn run_udp(socket: UdpSocket, ctx: Arc<CoapContext>) {
    let local = socket.local_addr().ok();
    let transport = Transport {
        local,
        tls: false,
        websocket: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut server = Server::new(ctx.clone(), transport, tx);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    server.datagram(peer, Bytes::copy_from_slice(&buf[..n]), None, Instant::now());
                }
                Err(e) => tracing::debug!(error = %e, "CoAP receive failed"),
            },
            Some(msg) = rx.recv() => {
                server.inbound(msg, Instant::now());
                // Take what else is queued before writing.
                while let Ok(msg) = rx.try_recv() {
                    server.inbound(msg, Instant::now());
                }
            }
            _ = tick.tick() => server.tick(Instant::now()),
        }
        for (peer, datagram) in server.drain_transmit() {
            send(&socket, peer, &datagram).await;
        }
        // Peers closed by an operator: nothing more to end over plain UDP.
        server.take_closed();
    }
    server.close();
}

async fn send(socket: &UdpSocket, peer: SocketAddr, datagram: &[u8]) {
    if let Err(e) = socket.send_to(datagram, peer).await {
        tracing::debug!(%peer, error = %e, "CoAP send failed");
    }
}
