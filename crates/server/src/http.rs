//! The HTTP listener (default 127.0.0.1:15672, RabbitMQ's management port):
//! MQTT over WebSocket at `/mqtt` (subprotocol `mqtt`) and XMPP over
//! WebSocket at `/xmpp-websocket` (RFC 7395, subprotocol `xmpp`), the
//! management API under `/api/` and Prometheus metrics at `/metrics`
//! (`crate::mgmt`).

use crate::mqtt::driver::{self as mqtt_driver, MqttContext};
use crate::xmpp::XmppContext;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bytes buffered between a WebSocket and the MQTT driver in each direction.
const BRIDGE_BUFFER: usize = 256 * 1024;

/// What the HTTP handlers reach.
#[derive(Clone)]
pub struct HttpState {
    /// The MQTT service, for `/mqtt`.
    pub mqtt: Arc<MqttContext>,
    /// The XMPP service, for `/xmpp-websocket`.
    pub xmpp: Option<Arc<XmppContext>>,
    /// The listener's address (the local end of WebSocket connections).
    pub local: SocketAddr,
    /// The management API and metrics.
    pub mgmt: Arc<crate::mgmt::MgmtState>,
    /// Whether this is the HTTPS listener (WebSocket clients then count as TLS ones:
    /// `[mqtt] tls_vhost`, the connection list).
    pub tls: bool,
}

impl HttpState {
    fn websocket(&self) -> crate::registry::Transport {
        crate::registry::Transport {
            local: Some(self.local),
            tls: self.tls,
            websocket: true,
        }
    }
}

/// Serves HTTP until shutdown.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let app = router(state);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the HTTP listener failed");
    }
}

/// Serves the same routes over TLS (the HTTPS listener) until shutdown.
pub async fn serve_tls(
    listener: crate::tls::TlsListener,
    state: HttpState,
    shutdown: CancellationToken,
) {
    use axum::serve::ListenerExt;
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // tap_io: axum's ConnectInfo<SocketAddr> for a listener of our own.
    if let Err(e) = axum::serve(listener.tap_io(|_| {}), service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the HTTPS listener failed");
    }
}

/// The routes of the HTTP and HTTPS listeners.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/mqtt", get(mqtt_ws))
        .route("/xmpp-websocket", get(xmpp_ws))
        .merge(crate::mgmt::router(state.mgmt.clone()))
        .merge(crate::xmpp::upload::routes())
        .with_state(state)
}

async fn mqtt_ws(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
) -> Response {
    let (ctx, transport) = (state.mqtt.clone(), state.websocket());
    // MQTT over WebSocket: the `mqtt` subprotocol, binary frames carrying a byte stream.
    ws.protocols(["mqtt"])
        .on_upgrade(move |socket| transport.scope(bridge(socket, peer, ctx)))
}

async fn xmpp_ws(
    ws: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
) -> Response {
    let transport = state.websocket();
    match state.xmpp {
        // RFC 7395: the `xmpp` subprotocol, one element per text message.
        Some(ctx) => ws.protocols(["xmpp"]).on_upgrade(move |socket| {
            transport.scope(crate::xmpp::session::run_ws(socket, peer, ctx))
        }),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Runs the ordinary MQTT driver on one end of an in-memory pipe and moves
/// bytes between the other end and the WebSocket's binary frames.
async fn bridge(socket: WebSocket, peer: SocketAddr, ctx: Arc<MqttContext>) {
    let (driver_side, bridge_side) = tokio::io::duplex(BRIDGE_BUFFER);
    let transport = crate::registry::Transport::current().unwrap_or_default();
    let driver = tokio::spawn(transport.scope(mqtt_driver::serve(driver_side, peer, ctx)));
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(bridge_side);
    let inbound = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let bytes = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if pipe_wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = pipe_wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::join!(inbound, outbound);
    let _ = driver.await;
}
