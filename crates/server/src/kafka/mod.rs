//! The Kafka listener: Kafka clients produce to and fetch from stream queues. A topic `t` with
//! one partition is the stream `t` of `[kafka] vhost`; with N partitions, the streams
//! `t-0`..`t-(N-1)` (`topics.rs`). One task per connection reads size-prefixed requests,
//! decodes them with `tributary-kafka` and answers each in order (Kafka clients rely on the
//! order); a Fetch or JoinGroup that waits holds the connection's next requests, as a Kafka
//! broker mutes the connection while a request is in flight. docs/streams.md has the mapping.

mod auth;
mod fetch;
mod groups;
mod produce;
mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tributary_core::Broker;
use tributary_kafka::response::{self, Broker as BrokerAddr};
use tributary_kafka::{Request, RequestHeader, api, code, decode_frame, decode_request};

use crate::config::KafkaConfig;
use crate::limits::Limits;
use crate::registry::{Protocol, Transport};
use crate::users::UserDb;

pub use groups::Groups;

/// Our node id in Metadata (a single broker).
const NODE_ID: i32 = 0;
/// Bytes of responses buffered before they are written out mid-batch.
const WRITE_CHUNK: usize = 256 << 10;

/// What every Kafka connection shares.
pub struct KafkaContext {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Users and permissions.
    pub users: Arc<UserDb>,
    /// Connection limits and the registry.
    pub limits: Arc<Limits>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// `[kafka]`.
    pub config: KafkaConfig,
    /// Consumer groups and their committed offsets.
    pub groups: Arc<Groups>,
    /// The delay before a failed login is answered.
    pub auth_failure_delay: Duration,
}

/// Runs one plain TCP connection; `advertised` is the address Metadata names.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<KafkaContext>,
    advertised: Arc<(String, i32)>,
) {
    let _ = stream.set_nodelay(true);
    let transport = Transport {
        local: stream.local_addr().ok(),
        ..Default::default()
    };
    transport
        .scope(Box::pin(serve(stream, peer, ctx, advertised)))
        .await;
}

/// Runs one TLS connection: the handshake, then the protocol.
pub async fn run_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<KafkaContext>,
    advertised: Arc<(String, i32)>,
    tls: crate::tls::TlsSetup,
) {
    let _ = stream.set_nodelay(true);
    let transport = Transport {
        local: stream.local_addr().ok(),
        tls: true,
        websocket: false,
    };
    match tls.accept(stream).await {
        Ok(accepted) => {
            transport
                .scope(Box::pin(serve(accepted.stream, peer, ctx, advertised)))
                .await
        }
        Err(e) => tracing::debug!(%peer, error = %e, "Kafka TLS handshake failed"),
    }
}

/// One connection's state.
pub(crate) struct Conn {
    pub ctx: Arc<KafkaContext>,
    pub peer: SocketAddr,
    pub advertised: Arc<(String, i32)>,
    /// The user requests act as (None until SASL when there is no anonymous user).
    pub user: Option<String>,
    pub sasl: auth::SaslState,
    pub conn_id: u64,
    pub fetch: fetch::Cursors,
    pub client_id: String,
    /// Records produced and fetched since the registry's counters were last updated.
    pub records_in: u64,
    pub records_out: u64,
}

/// What handling a request asks of the connection.
pub(crate) enum Outcome {
    /// Send this body.
    Reply(BytesMut),
    /// Send nothing (Produce with acks=0).
    Silent,
    /// Send this body, then close (a failed login).
    ReplyAndClose(BytesMut),
    /// Close without an answer (a request before authentication).
    Close,
}

impl Conn {
    pub(crate) fn broker_addr(&self) -> BrokerAddr {
        BrokerAddr {
            node_id: NODE_ID,
            host: self.advertised.0.clone(),
            port: self.advertised.1,
        }
    }

    pub(crate) fn vhost(&self) -> &str {
        &self.ctx.config.vhost
    }

    /// Whether the connection's user has `access` to the stream queue `resource`.
    pub(crate) fn may(&self, access: crate::users::Access, resource: &str) -> bool {
        self.user
            .as_deref()
            .is_some_and(|u| self.ctx.users.check(u, self.vhost(), access, resource))
    }

    async fn handle(&mut self, h: &RequestHeader, req: Request) -> Outcome {
        let v = h.api_version;
        let mut out = BytesMut::new();
        if self.user.is_none()
            && !matches!(
                req,
                Request::ApiVersions
                    | Request::SaslHandshake(_)
                    | Request::SaslAuthenticate(_)
                    | Request::Unsupported
            )
        {
            tracing::debug!(peer = %self.peer, api = h.api_key, "Kafka request before authentication; closing");
            return Outcome::Close;
        }
        match req {
            Request::Unsupported => {
                if h.api_key == api::API_VERSIONS {
                    response::api_versions(0, code::UNSUPPORTED_VERSION, &mut out);
                } else {
                    response::unsupported(&mut out);
                }
                tracing::debug!(peer = %self.peer, api = h.api_key, version = v, "unsupported Kafka API version");
            }
            Request::ApiVersions => response::api_versions(v, code::NONE, &mut out),
            Request::SaslHandshake(m) => return self.sasl_handshake(&m),
            Request::SaslAuthenticate(b) => return self.sasl_authenticate(v, b).await,
            Request::Metadata(r) => self.metadata(v, r, &mut out),
            Request::Produce(r) => return self.produce(v, r).await,
            Request::Fetch(r) => self.fetch(v, r, &mut out).await,
            Request::ListOffsets(r) => self.list_offsets(v, r, &mut out),
            Request::FindCoordinator(r) => {
                let error = if r.key_type == 0 {
                    code::NONE
                } else {
                    code::COORDINATOR_NOT_AVAILABLE
                };
                response::find_coordinator(v, error, &self.broker_addr(), &mut out)
            }
            Request::JoinGroup(r) => self.join_group(v, r, &mut out).await,
            Request::SyncGroup(r) => self.sync_group(v, r, &mut out).await,
            Request::Heartbeat(r) => self.heartbeat(v, r, &mut out),
            Request::LeaveGroup(r) => self.leave_group(v, r, &mut out),
            Request::OffsetCommit(r) => self.offset_commit(v, r, &mut out),
            Request::OffsetFetch(r) => self.offset_fetch(v, r, &mut out),
            Request::CreateTopics(r) => self.create_topics(v, r, &mut out),
            Request::DeleteTopics(r) => self.delete_topics(v, r, &mut out),
            Request::DescribeConfigs(r) => self.describe_configs(v, r, &mut out),
        }
        Outcome::Reply(out)
    }
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    ctx: Arc<KafkaContext>,
    advertised: Arc<(String, i32)>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // Kafka has no way to refuse a connection in its own protocol: over the limit, close.
    let Ok(_slot) = ctx.limits.admit() else {
        tracing::info!(%peer, "Kafka connection refused: connection limit reached");
        return;
    };
    let reg = ctx.limits.registry().register(Protocol::Kafka, peer, None);
    reg.set_vhost(&ctx.config.vhost);
    let anonymous = &ctx.config.anonymous_user;
    let user = (!anonymous.is_empty()
        && ctx.users.exists(anonymous)
        && ctx.users.may_connect_from(anonymous, peer.ip()))
    .then(|| anonymous.clone());
    if let Some(u) = &user {
        reg.set_user(u);
    }
    let max = ctx.config.max_request_size;
    let mut conn = Conn {
        conn_id: ctx.broker.next_connection_id(),
        ctx: ctx.clone(),
        peer,
        advertised,
        user,
        sasl: auth::SaslState::default(),
        fetch: fetch::Cursors::default(),
        client_id: String::new(),
        records_in: 0,
        records_out: 0,
    };
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inbuf = BytesMut::with_capacity(8 << 10);
    let mut out = BytesMut::new();
    'conn: loop {
        let n = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = reg.close_requested() => break,
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        reg.counters.read(n);
        loop {
            let frame = match decode_frame(&mut inbuf, max) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing a Kafka connection: bad request frame");
                    break 'conn;
                }
            };
            let (h, req) = match decode_request(frame) {
                Ok(x) => x,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "closing a Kafka connection: malformed request");
                    break 'conn;
                }
            };
            if conn.client_id.is_empty()
                && let Some(c) = &h.client_id
            {
                conn.client_id = c.clone();
                reg.set_client(c);
            }
            let outcome = conn.handle(&h, req).await;
            if let Some(u) = &conn.user {
                reg.set_user(u);
            }
            let (records_in, records_out) = (
                std::mem::take(&mut conn.records_in),
                std::mem::take(&mut conn.records_out),
            );
            reg.counters
                .messages_in
                .fetch_add(records_in, std::sync::atomic::Ordering::Relaxed);
            reg.counters
                .messages_out
                .fetch_add(records_out, std::sync::atomic::Ordering::Relaxed);
            let close = match outcome {
                Outcome::Reply(body) => {
                    response::frame_response(h.correlation_id, &body, &mut out);
                    false
                }
                Outcome::Silent => false,
                Outcome::ReplyAndClose(body) => {
                    response::frame_response(h.correlation_id, &body, &mut out);
                    true
                }
                Outcome::Close => true,
            };
            if close || out.len() >= WRITE_CHUNK {
                if wr.write_all(&out).await.is_err() {
                    break 'conn;
                }
                reg.counters.wrote(out.len());
                out.clear();
            }
            if close {
                break 'conn;
            }
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                break;
            }
            reg.counters.wrote(out.len());
            out.clear();
        }
        if inbuf.capacity() > 1 << 20 && inbuf.is_empty() {
            inbuf = BytesMut::with_capacity(8 << 10);
        }
    }
    let _ = wr.shutdown().await;
}
