//! The IO driver of one MQTT connection: decodes packets with the sans-IO
//! codec, runs the session, writes replies and deliveries once per wake-up,
//! and enforces the CONNECT timeout and keep alive (1.5× the interval), the
//! connection limits and the bound on output waiting for a slow client.

use super::Registry;
use super::session::{AuthFlow, End, Outbound, Session};
use crate::limits::Limits;
use crate::mailbox;
use crate::readbuf;
use crate::users::UserDb;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tributary_core::Broker;
use tributary_mqtt::{
    Disconnect, Packet, ProtocolVersion, ReasonCode, decode, encode, peek_connect_version,
};

/// How long a CONNECT waits for the connection it takes over to close.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Stop reading from the socket while this much output waits to be written
/// (or `[limits] max_buffered_bytes`, if lower).
const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Queued deliveries turned into packets per wake-up before the output is written.
const DELIVERY_BATCH: usize = 256;

/// Everything an MQTT connection needs from the broker.
pub struct MqttContext {
    /// The core.
    pub broker: Arc<Broker>,
    /// Accounts.
    pub users: Arc<UserDb>,
    /// Client ids in use, for takeover.
    pub registry: Registry,
    /// Retained messages by topic (in memory for now).
    pub retained: super::session::RetainedMap,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
    /// PUBLISH packets received, for `$SYS/broker/messages/received`.
    pub received: Arc<std::sync::atomic::AtomicU64>,
    /// Persistent sessions' expiry and QoS 2 state between connections.
    pub sessions: Arc<super::stored::SessionTable>,
    /// `[mqtt] max_keep_alive`: the longest keep alive a v5 client gets.
    pub max_keep_alive: u16,
    /// `[mqtt] vhost`: the vhost of clients whose username has no
    /// `vhost:` prefix.
    pub default_vhost: String,
    /// `[mqtt] tls_vhost`: the same for clients on MQTTS (and WebSocket over HTTPS).
    pub tls_vhost: String,
    /// `[mqtt] max_packet_size`: the largest packet accepted (advertised to v5 clients).
    pub max_packet_size: u32,
    /// `[mqtt] max_inflight`: QoS 1 and 2 deliveries unacknowledged per client.
    pub max_inflight: u16,
    /// `[mqtt] receive_maximum`: QoS 2 publishes a client may leave unreleased.
    pub receive_maximum: u16,
    /// Connection limits shared with the other protocols.
    pub limits: Arc<Limits>,
    /// `[limits] mqtt_connect_timeout`: time a client has to send CONNECT.
    pub connect_timeout: Duration,
    /// `[limits] max_buffered_bytes`: output waiting for the client past
    /// which QoS 0 deliveries are dropped.
    pub max_buffered_bytes: usize,
    /// `[mqtt] ssl_cert_login`: a verified client certificate logs its user
    /// in when the CONNECT has no password.
    pub ssl_cert_login: bool,
    /// `[auth] failure_delay_ms`: a refused login waits this long for its CONNACK.
    pub auth_failure_delay: Duration,
}

fn write(out: &mut BytesMut, packets: &mut Vec<Packet>, version: ProtocolVersion) {
    for p in packets.drain(..) {
        if let Err(e) = encode(&p, version, out) {
            tracing::warn!(error = %e, "cannot encode an MQTT packet");
        }
    }
}

/// Runs one connection to its end.
pub async fn run(stream: TcpStream, peer: SocketAddr, ctx: Arc<MqttContext>) {
    let _ = stream.set_nodelay(true);
    let transport = crate::registry::Transport {
        local: stream.local_addr().ok(),
        ..Default::default()
    };
    transport.scope(serve(stream, peer, ctx)).await;
}

/// Runs one MQTTS connection: the TLS handshake, then the connection.
pub async fn run_tls(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<MqttContext>,
    tls: crate::tls::TlsSetup,
) {
    let _ = stream.set_nodelay(true);
    let transport = crate::registry::Transport {
        local: stream.local_addr().ok(),
        tls: true,
        websocket: false,
    };
    // Both boxed: the task holds only the state it is in (memory per connection).
    match Box::pin(tls.accept(stream)).await {
        Ok(accepted) => {
            let cert_user = accepted.peer_name.filter(|_| ctx.ssl_cert_login);
            transport
                .scope(Box::pin(serve_as(accepted.stream, peer, ctx, cert_user)))
                .await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed"),
    }
}

/// Runs one connection over any byte stream (TCP, or a WebSocket bridged to bytes).
pub async fn serve<S>(stream: S, peer: SocketAddr, ctx: Arc<MqttContext>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    // Boxed: the task then holds this future once, at its exact size,
    // rather than nested in the wrappers' futures (memory per connection).
    Box::pin(serve_as(stream, peer, ctx, None)).await;
}

/// [`serve`], with the user of a verified client certificate (`[mqtt] ssl_cert_login`).
async fn serve_as<S>(stream: S, peer: SocketAddr, ctx: Arc<MqttContext>, cert_user: Option<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    // Admitted now, refused at CONNECT if past the limit (the client must
    // have spoken for the refusal to be in its own protocol version).
    let slot = ctx.limits.admit();
    let reg = (ctx.limits.registry()).register(crate::registry::Protocol::Mqtt, peer, None);
    let mut user_slot = None;
    let high_water = WRITE_HIGH_WATER.min(ctx.max_buffered_bytes);
    // QoS 0 deliveries dropped before the current congestion (for the log).
    let mut dropped_before: u64 = 0;
    let (mut rd, mut wr) = tokio::io::split(stream);
    // Nothing below allocates while the connection idles: no read buffer
    // (reads go through the thread's scratch buffer), an output buffer and a
    // packet list only while there is something to send, and a mailbox that
    // allocates on its first message (docs/benchmarks.md, memory per idle
    // connection).
    let (tx, mut rx) = mailbox::unbounded::<Outbound>();
    let mut batch: VecDeque<Outbound> = VecDeque::new();
    let mut session = Session::new(
        ctx.broker.clone(),
        ctx.users.clone(),
        ctx.retained.clone(),
        ctx.received.clone(),
        ctx.sessions.clone(),
        peer,
        tx,
    );
    session.max_keep_alive = ctx.max_keep_alive;
    let tls = crate::registry::Transport::current().is_some_and(|t| t.tls);
    session.default_vhost.clone_from(if tls {
        &ctx.tls_vhost
    } else {
        &ctx.default_vhost
    });
    session.set_limits(ctx.max_packet_size, ctx.max_inflight, ctx.receive_maximum);
    session.limits = Some(ctx.limits.clone());
    session.cert_user = cert_user;
    let mut inbuf = BytesMut::new();
    let mut outbuf = BytesMut::new();
    let mut packets = Vec::new();
    // Whether the last input or delivery carried messages: buffers are kept
    // while it does, and given back once only control packets (CONNECT,
    // PINGREQ, ...) came (see the end of the loop).
    let mut busy = false;
    let mut taken_over: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let mut deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    // Armed for `deadline` or earlier; moved on when it fires early, rather
    // than re-registered with the timer after every packet.
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    let mut publish_will = false;
    // Turns true once this connection has closed and saved its session.
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);

    'conn: loop {
        // Decode everything buffered.
        loop {
            let version = session.version;
            // Before decode consumes it: a refused CONNECT is answered in its own version.
            let connect_version = if version.is_none() {
                peek_connect_version(&inbuf)
            } else {
                None
            };
            let decoded = match decode(&mut inbuf, version, ctx.max_packet_size) {
                // MQTT 5 enhanced authentication (SCRAM) runs before the CONNECT is acted on.
                Ok(Some(p)) if session.in_enhanced_auth(&p) => {
                    match session.enhanced_auth(p, &mut packets) {
                        AuthFlow::Continue => {
                            write(&mut outbuf, &mut packets, ProtocolVersion::V5);
                            continue;
                        }
                        AuthFlow::Connect(c) => Ok(Some(Packet::Connect(*c))),
                        AuthFlow::Close => {
                            write(&mut outbuf, &mut packets, ProtocolVersion::V5);
                            break 'conn;
                        }
                    }
                }
                other => other,
            };
            match decoded {
                Ok(None) => break,
                Ok(Some(Packet::Connect(c))) => {
                    // Boxed: it lives across the takeover wait below.
                    let c = Box::new(c);
                    let v = c.protocol_version;
                    // Connection limits, before any takeover: a refused client
                    // cannot disconnect the session it names.
                    let mut refusal = slot.as_ref().err().cloned();
                    if refusal.is_none() && ctx.limits.limits_users() && session.login_ok(&c) {
                        match ctx.limits.admit_user(&session.login_user(&c)) {
                            Ok(s) => user_slot = Some(s),
                            Err(r) => refusal = Some(r),
                        }
                    }
                    if let Some(refusal) = refusal {
                        tracing::warn!(peer = %peer, client_id = %c.client_id, user = %session.login_user(&c), "MQTT connection refused: {}", refusal.text());
                        // 0x97 Quota exceeded; 3.1.1 has no such code: 0x03 Server unavailable.
                        packets.push(Packet::ConnAck(tributary_mqtt::ConnAck {
                            reason_code: ReasonCode::QUOTA_EXCEEDED,
                            ..Default::default()
                        }));
                        write(&mut outbuf, &mut packets, v);
                        break 'conn;
                    }
                    // Takeover: the previous connection with this client id goes,
                    // and its session is saved, before this one looks it up.
                    if !c.client_id.is_empty() && session.login_ok(&c) {
                        let (rx, old) = ctx.registry.claim(
                            &session.session_key_for(&c),
                            session.id,
                            closed_rx.clone(),
                        );
                        taken_over = Some(rx);
                        if let Some(mut old) = old {
                            // Boxed, as the other rare waits below: the
                            // connection's future stays the size of its
                            // steady state (memory per connection).
                            let _ = Box::pin(tokio::time::timeout(
                                TAKEOVER_WAIT,
                                old.wait_for(|closed| *closed),
                            ))
                            .await;
                        }
                    }
                    reg.set_user(&session.login_user(&c));
                    reg.set_client(&c.client_id);
                    let (ack, ok) = session.connect(*c);
                    let refused = matches!(&ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::BAD_USER_NAME_OR_PASSWORD || a.reason_code == ReasonCode::NOT_AUTHORIZED);
                    packets.push(ack);
                    if refused {
                        // Slows down password guessing: only this connection waits.
                        Box::pin(async {
                            tokio::select! {
                                _ = tokio::time::sleep(ctx.auth_failure_delay) => {}
                                _ = ctx.shutdown.cancelled() => {}
                            }
                        })
                        .await;
                    }
                    reg.set_vhost(session.vhost_name());
                    if ok {
                        session.after_connect(&mut packets);
                    }
                    write(&mut outbuf, &mut packets, v);
                    if !ok {
                        break 'conn;
                    }
                    if taken_over.is_none() {
                        taken_over = Some(
                            ctx.registry
                                .claim(&session.session_key, session.id, closed_rx.clone())
                                .0,
                        );
                    }
                    publish_will = true;
                }
                Ok(Some(packet)) => {
                    let Some(v) = version else { break 'conn };
                    busy = matches!(
                        packet,
                        Packet::Publish(_)
                            | Packet::PubAck(_)
                            | Packet::PubRec(_)
                            | Packet::PubRel(_)
                            | Packet::PubComp(_)
                    );
                    if matches!(packet, Packet::Publish(_)) {
                        reg.counters.message_in();
                    }
                    let end = session.handle(packet, &mut packets);
                    write(&mut outbuf, &mut packets, v);
                    if let End::Close { packet, will } = end {
                        if let Some(p) = packet {
                            packets.push(*p);
                            write(&mut outbuf, &mut packets, v);
                        }
                        publish_will = will;
                        break 'conn;
                    }
                }
                Err(e) => {
                    tracing::info!(peer = %peer, error = %e, "MQTT protocol error");
                    match session.version {
                        Some(v) if v.is_v5() => {
                            packets.push(Packet::Disconnect(Disconnect {
                                reason_code: e.reason_code(),
                                ..Default::default()
                            }));
                            write(&mut outbuf, &mut packets, v);
                        }
                        Some(_) => {}
                        None => {
                            // A refused CONNECT is answered in the client's own version when known.
                            if let Some(v) = connect_version {
                                let code = if v.is_v5() {
                                    Some(e.reason_code())
                                } else {
                                    e.connack_v3().map(|_| e.reason_code())
                                };
                                if let Some(code) = code {
                                    packets.push(Packet::ConnAck(tributary_mqtt::ConnAck {
                                        reason_code: code,
                                        ..Default::default()
                                    }));
                                    write(&mut outbuf, &mut packets, v);
                                }
                            }
                        }
                    }
                    break 'conn;
                }
            }
            if session.keep_alive > 0 {
                deadline = tokio::time::Instant::now()
                    + Duration::from_millis(u64::from(session.keep_alive) * 1500);
            } else if session.version.is_some() {
                deadline = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
            }
        }
        // Deliveries taken from the mailbox, a bounded number per wake-up.
        if let Some(v) = session.version {
            if !batch.is_empty() {
                busy = true;
            }
            for item in batch.drain(..DELIVERY_BATCH.min(batch.len())) {
                // A client that does not read has its QoS 0 messages
                // dropped past max_buffered_bytes, as Mosquitto and
                // RabbitMQ do; QoS 1 and 2 are bounded by the in-flight
                // window, and wait in the queue beyond it.
                let congested = outbuf.len() >= ctx.max_buffered_bytes;
                if congested != session.drop_qos0 {
                    session.drop_qos0 = congested;
                    if congested {
                        dropped_before = session.dropped;
                        tracing::warn!(peer = %peer, client_id = %session.client_id, buffered = outbuf.len(), "MQTT client does not keep up: dropping its QoS 0 messages");
                    } else {
                        tracing::info!(peer = %peer, client_id = %session.client_id, dropped = session.dropped - dropped_before, "MQTT client keeps up again");
                    }
                }
                match item {
                    Outbound::Deliver(d) => {
                        reg.counters.message_out();
                        session.deliver(d, &mut packets)
                    }
                    Outbound::Send(p) => packets.push(*p),
                }
                write(&mut outbuf, &mut packets, v);
            }
        }
        // Nothing is kept for an idle connection (see above); a busy one
        // keeps its buffers rather than allocate them at every wake-up.
        if !busy {
            if packets.capacity() != 0 {
                packets = Vec::new();
            }
            if outbuf.is_empty() && outbuf.capacity() != 0 {
                outbuf = BytesMut::new();
            }
        }
        mailbox::trim(&mut batch);
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => {
                if let Some(v) = session.version.filter(|v| v.is_v5()) {
                    packets.push(Packet::Disconnect(Disconnect { reason_code: ReasonCode::SERVER_SHUTTING_DOWN, ..Default::default() }));
                    write(&mut outbuf, &mut packets, v);
                }
                publish_will = false;
                break 'conn;
            }
            _ = reg.close_requested() => {
                // DELETE /api/connections/{name}: v5 gets 0x98 Administrative action.
                if let Some(v) = session.version.filter(|v| v.is_v5()) {
                    packets.push(Packet::Disconnect(Disconnect { reason_code: ReasonCode::ADMINISTRATIVE_ACTION, ..Default::default() }));
                    write(&mut outbuf, &mut packets, v);
                }
                publish_will = true;
                break 'conn;
            }
            _ = async { match taken_over.as_mut() { Some(rx) => { let _ = rx.await; } None => std::future::pending().await } } => {
                session.hand_over();
                if let Some(v) = session.version.filter(|v| v.is_v5()) {
                    packets.push(Packet::Disconnect(Disconnect { reason_code: ReasonCode::SESSION_TAKEN_OVER, ..Default::default() }));
                    write(&mut outbuf, &mut packets, v);
                }
                publish_will = true;
                break 'conn;
            }
            r = wr.write_buf(&mut outbuf), if !outbuf.is_empty() => {
                match r {
                    Ok(n) => reg.counters.wrote(n),
                    Err(_) => break 'conn,
                }
            }
            r = readbuf::read_into(&mut rd, &mut inbuf), if outbuf.len() < high_water => {
                match r {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => reg.counters.read(n),
                }
            }
            // More deliveries are taken once the last batch is handled.
            _ = rx.recv_many(&mut batch), if batch.is_empty() => {}
            _ = std::future::ready(()), if !batch.is_empty() => {}
            _ = &mut timer => {
                if deadline > timer.deadline() {
                    // Input came since it was armed: not due yet.
                    timer.as_mut().reset(deadline);
                    continue 'conn;
                }
                tracing::info!(peer = %peer, client_id = %session.client_id, "MQTT keep alive (or CONNECT) timeout");
                if let Some(v) = session.version.filter(|v| v.is_v5()) {
                    packets.push(Packet::Disconnect(Disconnect { reason_code: ReasonCode::KEEP_ALIVE_TIMEOUT, ..Default::default() }));
                    write(&mut outbuf, &mut packets, v);
                }
                break 'conn;
            }
        }
    }
    if publish_will && let Some(will) = session.take_will() {
        if will.delay == 0 {
            will.publish(&ctx.broker, &ctx.retained, &ctx.users);
        } else {
            // v5 Will Delay Interval: published unless the client is back in time.
            let (ctx, client_id, conn) = (ctx.clone(), session.session_key.clone(), session.id);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(will.delay))).await;
                if !ctx.registry.is_connected_elsewhere(&client_id, conn) {
                    will.publish(&ctx.broker, &ctx.retained, &ctx.users);
                }
            });
        }
    }
    session.close();
    if !session.client_id.is_empty() {
        ctx.registry.release(&session.session_key, session.id);
    }
    let _ = closed_tx.send(true);
    if !outbuf.is_empty() {
        let _ = Box::pin(tokio::time::timeout(
            Duration::from_secs(1),
            wr.write_all(&outbuf),
        ))
        .await;
    }
    // Its places are free before the client sees the end of the stream.
    drop((slot, user_slot, reg));
    let _ = wr.shutdown().await;
    rx.close();
    while let Some(item) = batch.pop_front().or_else(|| rx.try_recv()) {
        if let Outbound::Deliver(d) = item {
            d.queue.return_undelivered(vec![d.entry], true);
        }
    }
    if session.dropped > 0 {
        tracing::info!(peer = %peer, client_id = %session.client_id, dropped = session.dropped, "MQTT QoS 0 messages dropped for a slow client");
    }
    tracing::debug!(peer = %peer, client_id = %session.client_id, "MQTT connection closed");
}
