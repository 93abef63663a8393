//! One AMQP connection's broker-side logic: the events of the sans-IO
//! connection machine turned into core operations, and core deliveries turned
//! into frames. Owns the connection's channels; does no IO itself.

use super::channel::{Channel, ChannelConsumer, Confirm, Outcome, TxOp, Unacked, settle};
use super::consumer::{AmqpConsumer, ConnectionCredit, Outbound, Sink};
use super::props;
use crate::mailbox::UnboundedSender;
use crate::users::{Access, AuthError, DEFAULT_VHOST, UserDb};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tributary_amqp::reply;
use tributary_amqp::{BasicProperties, Connection, Event, FieldValue, Method, ShortStr};
use tributary_core::{
    Broker, ConnectionId, ConsumerOptions, CoreError, ExchangeKind, ExchangeOptions, Message,
    QueueOptions, Routed, Table, VHost,
};

/// Maps a core refusal to its AMQP reply code and whether it closes the whole
/// connection (hard error) or only the channel (soft error), as the spec says.
fn reply_for(err: &CoreError) -> (u16, bool) {
    match err {
        CoreError::NotFound(_) => (reply::NOT_FOUND, false),
        CoreError::AccessRefused(_) => (reply::ACCESS_REFUSED, false),
        CoreError::ResourceLocked(_) => (reply::RESOURCE_LOCKED, false),
        CoreError::PreconditionFailed(_) => (reply::PRECONDITION_FAILED, false),
        CoreError::NotAllowed(_) => (reply::NOT_ALLOWED, true),
        CoreError::CommandInvalid(_) => (reply::COMMAND_INVALID, true),
        CoreError::NotImplemented(_) => (reply::NOT_IMPLEMENTED, true),
        _ => (reply::INTERNAL_ERROR, true),
    }
}

/// Bodies from this size up are copied out of the read buffer (smaller ones
/// share it: a buffer holds many of them and the copy would cost more).
const OWN_ALLOCATION_FROM: usize = 512;

/// Whether the session goes on after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep driving.
    Continue,
    /// The connection is over: flush and drop the socket.
    Closed,
}

/// Broker-side state of one AMQP connection.
pub struct Session {
    id: ConnectionId,
    peer: SocketAddr,
    broker: Arc<Broker>,
    users: Arc<UserDb>,
    vhost: Option<Arc<VHost>>,
    user: Option<String>,
    channels: HashMap<u16, Channel>,
    credit: Arc<ConnectionCredit>,
    tx: UnboundedSender<Outbound>,
    cancel_notify: bool,
    blocked_notify: bool,
    publisher: bool,
    /// Whether the user has topic permissions in the vhost, by user
    /// database generation (most have none: no per-message check).
    topic_permissions: Option<(u64, bool)>,
    routed: Routed,
    next_epoch: u64,
    /// The user name of a verified TLS client certificate (SASL EXTERNAL).
    peer_identity: Option<String>,
    /// Set when a login was refused, until the driver has applied its delay.
    login_refused: bool,
    /// A SCRAM login between its two client messages.
    scram: Option<crate::scram::ScramLogin>,
}

fn method_ids(m: &Method) -> (u16, u16) {
    (m.class_id(), m.method_id())
}

fn text(s: &ShortStr) -> &str {
    s.as_str().unwrap_or("")
}

fn bool_arg(args: &tributary_amqp::FieldTable, key: &str) -> bool {
    matches!(args.get(key), Some(FieldValue::Bool(true)))
}

impl Session {
    /// A session for a freshly accepted socket.
    pub fn new(
        broker: Arc<Broker>,
        users: Arc<UserDb>,
        peer: SocketAddr,
        tx: UnboundedSender<Outbound>,
    ) -> Self {
        Session {
            id: broker.next_connection_id(),
            peer,
            broker,
            users,
            vhost: None,
            user: None,
            channels: HashMap::new(),
            credit: Arc::new(ConnectionCredit::default()),
            tx,
            cancel_notify: false,
            blocked_notify: false,
            publisher: false,
            topic_permissions: None,
            routed: Routed::default(),
            next_epoch: 0,
            peer_identity: None,
            login_refused: false,
            scram: None,
        }
    }

    /// The user name of the client's verified TLS certificate, for SASL EXTERNAL.
    pub fn set_peer_identity(&mut self, identity: Option<String>) {
        self.peer_identity = identity;
    }

    /// Whether a login was refused since the last call (the driver delays
    /// the refusal, `[auth] failure_delay_ms`).
    pub fn take_login_refused(&mut self) -> bool {
        std::mem::take(&mut self.login_refused)
    }

    /// SASL EXTERNAL: the certificate's user, who must exist (no password)
    /// and may connect from this address; `authzid`, if any, must name it.
    fn authenticate_external(&self, authzid: &str) -> Result<String, AuthError> {
        let external =
            tributary_sasl::parse_external(authzid.as_bytes(), self.peer_identity.as_deref())
                .map_err(|_| AuthError::InvalidCredentials)?;
        let user = external.identity;
        if external.authzid.is_some_and(|a| a != user) || !self.users.exists(&user) {
            return Err(AuthError::InvalidCredentials);
        }
        if !self.users.may_connect_from(&user, self.peer.ip()) {
            return Err(AuthError::LoopbackOnly);
        }
        Ok(user)
    }

    /// Logs a refused login with the peer, marks it for the driver's delay and closes the
    /// connection with 403 ACCESS_REFUSED. `detail` is for the log only.
    fn refuse_login(
        &mut self,
        conn: &mut Connection,
        mechanism: tributary_amqp::Mechanism,
        username: &str,
        e: AuthError,
        detail: &str,
    ) {
        self.login_refused = true;
        tracing::warn!(peer = %self.peer, user = %username, mechanism = mechanism.name(), reason = %e, detail, "AMQP login refused");
        let reason = match e {
            AuthError::LoopbackOnly => {
                format!("ACCESS_REFUSED - user '{username}' can only connect via localhost")
            }
            AuthError::InvalidCredentials => format!(
                "ACCESS_REFUSED - Login was refused using authentication mechanism {}. For details see the broker logfile.",
                mechanism.name()
            ),
        };
        conn.reject_auth(&reason);
    }

    /// One round of a SCRAM login: client-first-message (round 0) is answered with
    /// server-first-message, client-final-message (round 1) with server-final-message and
    /// the login; anything else is refused.
    fn scram_step(
        &mut self,
        conn: &mut Connection,
        mechanism: tributary_amqp::Mechanism,
        round: u8,
        response: &[u8],
    ) {
        use crate::scram::{Refusal, ScramLogin};
        use tributary_amqp::Mechanism;
        use tributary_sasl::ScramHash;
        let hash = match mechanism {
            Mechanism::ScramSha1 => ScramHash::Sha1,
            Mechanism::ScramSha256 => ScramHash::Sha256,
            _ => {
                return self.refuse_login(
                    conn,
                    mechanism,
                    "",
                    AuthError::InvalidCredentials,
                    "not a SCRAM mechanism",
                );
            }
        };
        let users = self.users.clone();
        let result = match (round, self.scram.take()) {
            (0, _) => ScramLogin::start(&users, hash, response).map(|(login, server_first)| {
                self.scram = Some(login);
                conn.auth_challenge(&server_first);
            }),
            (1, Some(login)) => {
                let finished = login.finish(&users, self.peer.ip(), response);
                finished.map(|(user, server_final)| {
                    conn.accept_auth_with_data(&user, &server_final);
                    self.user = Some(user);
                })
            }
            (_, login) => Err(Refusal {
                user: login.map(|l| l.user().to_owned()).unwrap_or_default(),
                error: AuthError::InvalidCredentials,
                detail: "unexpected SCRAM round".into(),
            }),
        };
        if let Err(r) = result {
            self.refuse_login(conn, mechanism, &r.user, r.error, &r.detail);
        }
    }

    /// Handles one event from the connection machine.
    pub fn handle_event(&mut self, conn: &mut Connection, event: Event) -> Flow {
        match event {
            Event::Authenticate {
                mechanism,
                username,
                password,
            } => {
                let result = if mechanism == tributary_amqp::Mechanism::External {
                    self.authenticate_external(&username)
                } else {
                    self.users
                        .authenticate(&username, &password, self.peer.ip())
                        .map(|_| username.clone())
                };
                match result {
                    Ok(user) => {
                        conn.accept_auth_as(&user);
                        self.user = Some(user);
                    }
                    Err(e) => {
                        let username = match mechanism {
                            tributary_amqp::Mechanism::External => {
                                self.peer_identity.clone().unwrap_or_default()
                            }
                            _ => username,
                        };
                        self.refuse_login(conn, mechanism, &username, e, "");
                    }
                }
                Flow::Continue
            }
            Event::AuthStep {
                mechanism,
                round,
                response,
            } => {
                self.scram_step(conn, mechanism, round, &response);
                Flow::Continue
            }
            Event::Open { vhost } => {
                let user = self.user.clone().unwrap_or_default();
                match crate::vhosts::resolve(&self.broker, &self.users, &vhost) {
                    Some(_) if !self.users.vhost_access(&user, &vhost) => {
                        tracing::warn!(peer = %self.peer, user = %user, vhost = %vhost, "AMQP vhost access refused");
                        conn.reject_open(
                            reply::NOT_ALLOWED,
                            &format!(
                                "NOT_ALLOWED - access to vhost '{vhost}' refused for user '{user}'"
                            ),
                        );
                    }
                    Some(v) => {
                        self.vhost = Some(v);
                        let capability = |name: &str| {
                            conn.client_properties()
                                .and_then(|p| match p.get("capabilities") {
                                    Some(FieldValue::Table(t)) => Some(bool_arg(t, name)),
                                    _ => None,
                                })
                                .unwrap_or(false)
                        };
                        self.cancel_notify = capability("consumer_cancel_notify");
                        self.blocked_notify = capability("connection.blocked");
                        conn.accept_open();
                        tracing::info!(peer = %self.peer, user = self.user.as_deref().unwrap_or(""), vhost = %vhost, "AMQP connection opened");
                    }
                    None => conn.reject_open(
                        reply::NOT_ALLOWED,
                        &format!("NOT_ALLOWED - vhost {vhost} not found"),
                    ),
                }
                Flow::Continue
            }
            Event::ChannelOpened { channel } => {
                self.next_epoch += 1;
                self.channels.insert(channel, Channel::new(self.next_epoch));
                Flow::Continue
            }
            Event::ChannelClosed { channel } => {
                self.drop_channel(channel);
                Flow::Continue
            }
            Event::ChannelCloseOk { .. } => Flow::Continue,
            Event::Method { channel, method } => {
                self.handle_method(conn, channel, method);
                Flow::Continue
            }
            Event::Publish {
                channel,
                exchange,
                routing_key,
                mandatory,
                immediate,
                properties,
                body,
            } => {
                self.publish(
                    conn,
                    channel,
                    exchange,
                    routing_key,
                    mandatory,
                    immediate,
                    properties,
                    body,
                );
                Flow::Continue
            }
            Event::Closed { reason } => {
                tracing::debug!(peer = %self.peer, ?reason, "AMQP connection closed");
                self.close_all();
                Flow::Closed
            }
            other => {
                tracing::debug!(?other, "ignoring an AMQP event this broker does not handle");
                Flow::Continue
            }
        }
    }

    fn vhost(&self) -> Arc<VHost> {
        match &self.vhost {
            Some(v) => v.clone(),
            None => self.broker.default_vhost().clone(),
        }
    }

    fn vhost_name(&self) -> &str {
        self.vhost.as_ref().map_or(DEFAULT_VHOST, |v| v.name())
    }

    /// RabbitMQ's resource check: `access` to the exchange or queue (`kind`)
    /// called `name` in this connection's vhost, refused with its 403 text.
    /// The default exchange is checked under the name `amq.default`.
    fn permit(&self, access: Access, kind: &str, name: &str) -> Result<(), CoreError> {
        let name = if kind == "exchange" && name.is_empty() {
            "amq.default"
        } else {
            name
        };
        let user = self.user.as_deref().unwrap_or("");
        let vhost = self.vhost_name();
        if self.users.check(user, vhost, access, name) {
            return Ok(());
        }
        Err(CoreError::AccessRefused(format!(
            "{} access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'",
            access.as_str()
        )))
    }

    /// Write access to `exchange` for basic.publish, checked once per channel
    /// and exchange while the user database stays the same.
    fn permit_publish(&mut self, channel: u16, exchange: &[u8]) -> Result<(), CoreError> {
        let generation = self.users.generation();
        if self
            .channels
            .get(&channel)
            .is_some_and(|ch| ch.publish_permits.allows(generation, exchange))
        {
            return Ok(());
        }
        self.permit(
            Access::Write,
            "exchange",
            &String::from_utf8_lossy(exchange),
        )?;
        if let Some(ch) = self.channels.get_mut(&channel) {
            ch.publish_permits.allow(generation, exchange);
        }
        Ok(())
    }

    /// RabbitMQ's topic authorisation: on a topic exchange, `access` (write
    /// to publish, read to bind) with `routing_key` must be allowed by the
    /// user's topic permissions, if they have any for the exchange.
    fn permit_topic(
        &mut self,
        access: Access,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), CoreError> {
        let generation = self.users.generation();
        let has = match self.topic_permissions {
            Some((g, has)) if g == generation => has,
            _ => {
                let user = self.user.as_deref().unwrap_or("");
                let has = self.users.has_topic_permissions(user, self.vhost_name());
                self.topic_permissions = Some((generation, has));
                has
            }
        };
        if !has {
            return Ok(());
        }
        let user = self.user.clone().unwrap_or_default();
        let vhost = self.vhost();
        let is_topic = vhost
            .exchange(exchange)
            .is_ok_and(|x| x.options().kind == ExchangeKind::Topic);
        if !is_topic {
            return Ok(());
        }
        let context = crate::users::TopicContext {
            username: &user,
            vhost: vhost.name(),
            client_id: "",
        };
        if self
            .users
            .check_topic(&user, exchange, access, routing_key, &context)
        {
            return Ok(());
        }
        Err(CoreError::AccessRefused(format!(
            "{} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{user}'",
            access.as_str(),
            vhost.name()
        )))
    }

    fn channel_error(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        err: CoreError,
        ids: (u16, u16),
    ) {
        let (code, hard) = reply_for(&err);
        let text = err.to_string();
        if hard {
            self.connection_error(conn, code, &text, ids);
        } else {
            self.drop_channel(channel);
            conn.close_channel(channel, code, &text, ids.0, ids.1);
        }
    }

    fn connection_error(&mut self, conn: &mut Connection, code: u16, text: &str, ids: (u16, u16)) {
        self.close_all();
        conn.close(code, text, ids.0, ids.1);
    }

    /// Releases a channel's resources: cancels its consumers and requeues its
    /// unacked deliveries (flagged redelivered), as RabbitMQ does.
    fn drop_channel(&mut self, channel: u16) {
        let Some(mut ch) = self.channels.remove(&channel) else {
            return;
        };
        let vhost = self.vhost();
        for (tag, c) in ch.consumers.drain() {
            c.consumer.live.store(false, Ordering::Release);
            vhost.cancel_consumer(&c.queue, self.id, channel, &tag);
        }
        let unacked: Vec<Unacked> = ch.unacked.drain(..).collect();
        settle(unacked, Outcome::Requeue);
    }

    /// Releases everything the connection holds: channels, then exclusive queues.
    pub fn close_all(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.drop_channel(id);
        }
        if let Some(v) = &self.vhost {
            v.connection_closed(self.id);
        }
    }

    /// True once the connection has published: only publishers are blocked by the memory alarm.
    pub fn is_publisher(&self) -> bool {
        self.publisher
    }

    /// Tells a client that asked for it (capability `connection.blocked`) that
    /// the broker stopped, or resumed, reading its publishes.
    pub fn notify_blocked(&mut self, conn: &mut Connection, blocked: bool) {
        if !self.blocked_notify {
            return;
        }
        let method = if blocked {
            Method::ConnectionBlocked {
                reason: ShortStr::from_static("low on memory"),
            }
        } else {
            Method::ConnectionUnblocked
        };
        conn.send_method(0, &method);
    }

    /// Sends the coalesced publisher confirms (one basic.ack multiple per channel).
    pub fn flush_confirms(&mut self, conn: &mut Connection) {
        for (id, ch) in self.channels.iter_mut() {
            for confirm in ch.confirm_out.drain(..) {
                let method = match confirm {
                    Confirm::AckUpTo(tag) => Method::BasicAck {
                        delivery_tag: tag,
                        multiple: true,
                    },
                    Confirm::Nack(tag) => Method::BasicNack {
                        delivery_tag: tag,
                        multiple: false,
                        requeue: false,
                    },
                };
                conn.send_method(*id, &method);
            }
        }
    }

    /// Body bytes of deliveries that may wait for the connection task before
    /// queues stop feeding it (`[limits] max_buffered_bytes`).
    pub fn set_max_pending_bytes(&self, max: usize) {
        self.credit.max_pending_bytes.store(max, Ordering::Relaxed);
    }

    /// Re-dispatches the queues this connection consumes from after its
    /// pending-delivery backlog drained.
    pub fn redispatch_if_starved(&mut self) {
        if self.credit.pending.load(Ordering::Acquire)
            < super::consumer::CONNECTION_PENDING_LIMIT / 2
            && self.credit.pending_bytes.load(Ordering::Acquire)
                < self.credit.max_pending_bytes.load(Ordering::Relaxed) / 2
            && self.credit.starved.swap(false, Ordering::AcqRel)
        {
            self.redispatch_all();
        }
    }

    fn redispatch_all(&self) {
        for ch in self.channels.values() {
            for c in ch.consumers.values() {
                c.wake();
                c.queue.dispatch();
            }
        }
    }

    fn redispatch_channel(&self, channel: u16) {
        if let Some(ch) = self.channels.get(&channel) {
            for c in ch.consumers.values() {
                c.wake();
                c.queue.dispatch();
            }
        }
    }

    /// Writes a delivery from a queue, or puts it back when its consumer is gone.
    pub fn handle_outbound(&mut self, conn: &mut Connection, out: Outbound) {
        match out {
            Outbound::Deliver(consumer, delivery) => {
                self.credit.taken(delivery.entry.message.body.len());
                let live = consumer.live.load(Ordering::Acquire)
                    && self
                        .channels
                        .get(&consumer.channel)
                        .and_then(|ch| ch.consumers.get(&consumer.tag))
                        .is_some_and(|c| Arc::ptr_eq(&c.consumer, &consumer));
                if !live || !conn.is_open() {
                    // Never written: back to its place, not flagged redelivered.
                    if !consumer.no_ack {
                        consumer.release();
                    }
                    delivery
                        .queue
                        .return_undelivered(vec![delivery.entry], !consumer.no_ack);
                    return;
                }
                let Some(ch) = self.channels.get_mut(&consumer.channel) else {
                    return;
                };
                ch.last_delivery_tag += 1;
                let tag = ch.last_delivery_tag;
                let m = &delivery.entry.message;
                conn.send_content(
                    consumer.channel,
                    &Method::BasicDeliver {
                        consumer_tag: consumer.wire_tag.clone(),
                        delivery_tag: tag,
                        redelivered: delivery.entry.redelivered,
                        exchange: ShortStr::from_bytes(m.exchange.clone()),
                        routing_key: ShortStr::from_bytes(m.routing_key.clone()),
                    },
                    &props::to_wire(&m.properties),
                    &m.body,
                );
                if consumer.no_ack {
                    delivery.queue.delivered_no_ack(&delivery.entry);
                } else {
                    ch.unacked.push_back(Unacked {
                        tag,
                        queue: delivery.queue,
                        entry: delivery.entry,
                        consumer: Some(consumer),
                    });
                }
            }
            Outbound::Durable {
                channel,
                epoch,
                seq,
            } => {
                if let Some(ch) = self.channels.get_mut(&channel)
                    && ch.epoch == epoch
                {
                    ch.durable(seq);
                }
            }
            Outbound::TxDurable { channel, epoch } => {
                if self
                    .channels
                    .get(&channel)
                    .is_some_and(|ch| ch.epoch == epoch)
                    && conn.is_open()
                {
                    conn.send_method(channel, &Method::TxCommitOk);
                }
            }
            Outbound::Cancelled(consumer) => {
                let Some(ch) = self.channels.get_mut(&consumer.channel) else {
                    return;
                };
                let known = ch
                    .consumers
                    .get(&consumer.tag)
                    .is_some_and(|c| Arc::ptr_eq(&c.consumer, &consumer));
                if known {
                    ch.consumers.remove(&consumer.tag);
                    consumer.live.store(false, Ordering::Release);
                    if self.cancel_notify && conn.is_open() {
                        conn.send_method(
                            consumer.channel,
                            &Method::BasicCancel {
                                consumer_tag: consumer.wire_tag.clone(),
                                nowait: true,
                            },
                        );
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        exchange: ShortStr,
        routing_key: ShortStr,
        mandatory: bool,
        immediate: bool,
        properties: BasicProperties,
        body: Bytes,
    ) {
        let ids = (60, 40);
        self.publisher = true;
        if immediate {
            self.connection_error(
                conn,
                reply::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - immediate=true",
                ids,
            );
            return;
        }
        if let Err(e) = self
            .permit_publish(channel, exchange.as_bytes())
            .and_then(|()| {
                self.permit_topic(
                    Access::Write,
                    &String::from_utf8_lossy(exchange.as_bytes()),
                    &String::from_utf8_lossy(routing_key.as_bytes()),
                )
            })
        {
            self.channel_error(conn, channel, e, ids);
            return;
        }
        if let Some(uid) = &properties.user_id
            && Some(uid.as_bytes()) != self.user.as_deref().map(str::as_bytes)
        {
            let err = CoreError::PreconditionFailed(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                String::from_utf8_lossy(uid.as_bytes()),
                self.user.as_deref().unwrap_or("")
            ));
            self.channel_error(conn, channel, err, ids);
            return;
        }
        if let Some(exp) = &properties.expiration
            && exp.as_str().and_then(|s| s.parse::<u64>().ok()).is_none()
        {
            let err = CoreError::PreconditionFailed(format!(
                "invalid expiration '{}': {{error,no_integer}}",
                String::from_utf8_lossy(exp.as_bytes())
            ));
            self.channel_error(conn, channel, err, ids);
            return;
        }
        let vhost = self.vhost();
        let exchange_bytes = exchange.into_bytes();
        let mut core_props = props::to_core(properties);
        // Sender-selected distribution (RabbitMQ): CC and BCC add routing keys; BCC is
        // removed before anyone sees the message.
        let mut extra_keys = core_props.cc_keys("CC");
        extra_keys.extend(core_props.cc_keys("BCC"));
        if let Some(h) = core_props.headers.as_mut() {
            h.0.retain(|(k, _)| k != "BCC");
        }
        // Decoded fields are slices of the socket read buffer. A large message
        // that may wait in a queue gets its own allocations, so it never pins a
        // read buffer twice its size; small ones share it (a buffer holds many).
        let (exchange_bytes, routing_key, body) = if body.len() >= OWN_ALLOCATION_FROM {
            core_props.detach();
            (
                Bytes::copy_from_slice(&exchange_bytes),
                Bytes::copy_from_slice(routing_key.as_bytes()),
                Bytes::copy_from_slice(&body),
            )
        } else {
            (exchange_bytes, routing_key.into_bytes(), body)
        };
        let message = Message::new(exchange_bytes.clone(), routing_key, core_props, body);
        let exchange_name = std::str::from_utf8(&exchange_bytes).unwrap_or("\u{fffd}");
        if let Some(outcome) = vhost.hold_delayed(exchange_name, &message) {
            // x-delayed-message: routed when the delay has passed.
            self.confirm_publish(channel, outcome);
            return;
        }
        let mut routed = std::mem::take(&mut self.routed);
        routed.queues.clear();
        let mut result = vhost.route(
            exchange_name,
            &message.routing_key,
            &message.properties,
            &mut routed,
        );
        for key in &extra_keys {
            if result.is_ok() {
                result = vhost.route(exchange_name, key, &message.properties, &mut routed);
            }
        }
        let in_tx = self.channels.get(&channel).is_some_and(|c| c.tx.is_some());
        match result {
            Err(e) => self.channel_error(conn, channel, e, ids),
            Ok(()) => {
                if routed.queues.is_empty() && mandatory {
                    conn.send_content(
                        channel,
                        &Method::BasicReturn {
                            reply_code: reply::NO_ROUTE,
                            reply_text: ShortStr::from_static("NO_ROUTE"),
                            exchange: ShortStr::from_bytes(message.exchange.clone()),
                            routing_key: ShortStr::from_bytes(message.routing_key.clone()),
                        },
                        &props::to_wire(&message.properties),
                        &message.body,
                    );
                }
                let mut outcome = tributary_core::Enqueued::default();
                if in_tx {
                    if let Some(tx) = self.channels.get_mut(&channel).and_then(|c| c.tx.as_mut()) {
                        tx.push(TxOp::Publish(message, routed.queues.clone()));
                    }
                } else {
                    outcome = vhost.enqueue(&message, &routed.queues);
                }
                self.confirm_publish(channel, outcome);
            }
        }
        routed.queues.clear();
        self.routed = routed;
    }

    /// Counts a publish in confirm mode and arranges its confirm: at once, after
    /// the store's fsync, or as a nack when a queue refused it.
    fn confirm_publish(&mut self, channel: u16, outcome: tributary_core::Enqueued) {
        if let Some(ch) = self.channels.get_mut(&channel)
            && let Some(seq) = ch.confirm_seq.as_mut()
        {
            *seq += 1;
            let seq = *seq;
            if outcome.on_disk
                && let Some(p) = self.broker.persistence()
            {
                let (tx, epoch) = (self.tx.clone(), ch.epoch);
                p.when_durable(Box::new(move || {
                    let _ = tx.send(Outbound::Durable {
                        channel,
                        epoch,
                        seq,
                    });
                }));
            }
            ch.published(seq, outcome.on_disk, outcome.rejected);
        }
    }

    fn handle_method(&mut self, conn: &mut Connection, channel: u16, method: Method) {
        let ids = method_ids(&method);
        if let Err(e) = self.try_method(conn, channel, method) {
            self.channel_error(conn, channel, e, ids);
        }
    }

    fn queue_name(&self, channel: u16, name: &ShortStr) -> Result<String, CoreError> {
        let n = text(name);
        if !n.is_empty() {
            return Ok(n.to_string());
        }
        self.channels
            .get(&channel)
            .and_then(|c| c.last_queue.as_deref())
            .map(str::to_string)
            .ok_or_else(|| CoreError::NotFound("no previously declared queue".into()))
    }

    fn try_method(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        method: Method,
    ) -> Result<(), CoreError> {
        let vhost = self.vhost();
        let id = self.id;
        match method {
            Method::ChannelFlow { active } => {
                if let Some(ch) = self.channels.get(&channel) {
                    ch.credit.active.store(active, Ordering::Release);
                }
                conn.send_method(channel, &Method::ChannelFlowOk { active });
                if active {
                    self.redispatch_channel(channel);
                }
            }
            Method::ChannelFlowOk { .. } => {}
            Method::ExchangeDeclare {
                exchange,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                nowait,
                arguments,
                ..
            } => {
                let arguments = props::table_to_core(arguments);
                if !passive {
                    self.permit_exchange_declare(&vhost, text(&exchange), text(&kind), &arguments)?;
                }
                let created = !passive && vhost.exchange(text(&exchange)).is_err();
                let x = vhost.declare_exchange(text(&exchange), text(&kind), passive, |kind| {
                    ExchangeOptions {
                        delayed: false,
                        kind,
                        durable,
                        auto_delete,
                        internal,
                        arguments,
                    }
                })?;
                crate::cluster::exchange_declared(&vhost, &x, created)?;
                if !nowait {
                    conn.send_method(channel, &Method::ExchangeDeclareOk);
                }
            }
            Method::ExchangeDelete {
                exchange,
                if_unused,
                nowait,
                ..
            } => {
                let name = text(&exchange);
                // The default and amq.* exchanges are refused as such first.
                if !name.is_empty() && !name.starts_with("amq.") {
                    self.permit(Access::Configure, "exchange", name)?;
                }
                crate::cluster::deleting_exchange(&vhost, name, if_unused)?;
                vhost.delete_exchange(name, if_unused)?;
                if !nowait {
                    conn.send_method(channel, &Method::ExchangeDeleteOk);
                }
            }
            Method::ExchangeBind {
                destination,
                source,
                routing_key,
                nowait,
                arguments,
                ..
            } => {
                self.permit_binding("exchange", text(&destination), text(&source))?;
                let arguments = props::table_to_core(arguments);
                vhost.bind_exchange(
                    text(&destination),
                    text(&source),
                    text(&routing_key),
                    arguments.clone(),
                )?;
                crate::cluster::bound(
                    &vhost,
                    text(&source),
                    true,
                    text(&destination),
                    text(&routing_key),
                    &arguments,
                )?;
                if !nowait {
                    conn.send_method(channel, &Method::ExchangeBindOk);
                }
            }
            Method::ExchangeUnbind {
                destination,
                source,
                routing_key,
                nowait,
                arguments,
                ..
            } => {
                self.permit_binding("exchange", text(&destination), text(&source))?;
                let arguments = props::table_to_core(arguments);
                crate::cluster::unbinding(
                    &vhost,
                    text(&source),
                    true,
                    text(&destination),
                    text(&routing_key),
                    &arguments,
                )?;
                vhost.unbind_exchange(
                    text(&destination),
                    text(&source),
                    text(&routing_key),
                    arguments,
                )?;
                if !nowait {
                    conn.send_method(channel, &Method::ExchangeUnbindOk);
                }
            }
            Method::QueueDeclare {
                queue,
                passive,
                durable,
                exclusive,
                auto_delete,
                nowait,
                arguments,
                ..
            } => {
                let options = QueueOptions {
                    durable,
                    exclusive,
                    auto_delete,
                    arguments: props::table_to_core(arguments),
                };
                let name = if passive {
                    self.queue_name(channel, &queue)?
                } else {
                    text(&queue).to_string()
                };
                let d = if passive {
                    vhost.declare_queue(&name, passive, options, id)?
                } else {
                    let created = name.is_empty() || vhost.queue(&name, id).is_err();
                    let d = self.declare_queue_permitted(&vhost, &name, options)?;
                    crate::cluster::queue_declared(&vhost, &d.queue, created)?;
                    d
                };
                if let Some(ch) = self.channels.get_mut(&channel) {
                    ch.last_queue = Some(d.queue.name_arc().clone());
                }
                if !nowait {
                    conn.send_method(
                        channel,
                        &Method::QueueDeclareOk {
                            queue: ShortStr::from(d.queue.name()),
                            message_count: d.message_count,
                            consumer_count: d.consumer_count,
                        },
                    );
                }
            }
            Method::QueueBind {
                queue,
                exchange,
                routing_key,
                nowait,
                arguments,
                ..
            } => {
                let q = self.queue_name(channel, &queue)?;
                self.permit_binding("queue", &q, text(&exchange))?;
                self.permit_topic(Access::Read, text(&exchange), text(&routing_key))?;
                let arguments = props::table_to_core(arguments);
                vhost.bind_queue(
                    &q,
                    text(&exchange),
                    text(&routing_key),
                    arguments.clone(),
                    id,
                )?;
                crate::cluster::bound(
                    &vhost,
                    text(&exchange),
                    false,
                    &q,
                    text(&routing_key),
                    &arguments,
                )?;
                if !nowait {
                    conn.send_method(channel, &Method::QueueBindOk);
                }
            }
            Method::QueueUnbind {
                queue,
                exchange,
                routing_key,
                arguments,
                ..
            } => {
                let q = self.queue_name(channel, &queue)?;
                self.permit_binding("queue", &q, text(&exchange))?;
                self.permit_topic(Access::Read, text(&exchange), text(&routing_key))?;
                let arguments = props::table_to_core(arguments);
                crate::cluster::unbinding(
                    &vhost,
                    text(&exchange),
                    false,
                    &q,
                    text(&routing_key),
                    &arguments,
                )?;
                vhost.unbind_queue(&q, text(&exchange), text(&routing_key), arguments, id)?;
                conn.send_method(channel, &Method::QueueUnbindOk);
            }
            Method::QueuePurge { queue, nowait, .. } => {
                let name = self.queue_name(channel, &queue)?;
                self.permit(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, id)?;
                let n = q.purge();
                if !nowait {
                    conn.send_method(
                        channel,
                        &Method::QueuePurgeOk {
                            message_count: n as u32,
                        },
                    );
                }
            }
            Method::QueueDelete {
                queue,
                if_unused,
                if_empty,
                nowait,
                ..
            } => {
                let name = self.queue_name(channel, &queue)?;
                self.permit(Access::Configure, "queue", &name)?;
                crate::cluster::deleting_queue(&vhost, &name, if_unused, if_empty, id)?;
                let n = vhost.delete_queue(&name, if_unused, if_empty, id)?;
                if !nowait {
                    conn.send_method(channel, &Method::QueueDeleteOk { message_count: n });
                }
            }
            Method::BasicQos {
                prefetch_size,
                prefetch_count,
                global,
            } => {
                if prefetch_size != 0 {
                    return Err(CoreError::NotImplemented(format!(
                        "prefetch_size!=0 ({prefetch_size})"
                    )));
                }
                if let Some(ch) = self.channels.get_mut(&channel) {
                    if global {
                        ch.credit
                            .prefetch
                            .store(prefetch_count as u32, Ordering::Release);
                    } else {
                        ch.consumer_prefetch = prefetch_count as u32;
                    }
                }
                conn.send_method(channel, &Method::BasicQosOk);
                self.redispatch_channel(channel);
            }
            Method::BasicConsume {
                queue,
                consumer_tag,
                no_ack,
                exclusive,
                nowait,
                arguments,
                ..
            } => {
                let priority = arguments
                    .get("x-priority")
                    .and_then(|v| props::value_to_core(v.clone()).as_i64())
                    .unwrap_or(0)
                    .clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                let name = self.queue_name(channel, &queue)?;
                match vhost.queue(&name, id) {
                    Ok(q) if q.is_stream() => self.consume_stream(
                        conn,
                        channel,
                        q,
                        consumer_tag,
                        no_ack,
                        nowait,
                        &props::table_to_core(arguments),
                    )?,
                    _ => self.consume(
                        conn,
                        channel,
                        &vhost,
                        queue,
                        consumer_tag,
                        priority,
                        no_ack,
                        exclusive,
                        nowait,
                    )?,
                }
            }
            Method::BasicCancel {
                consumer_tag,
                nowait,
            } => {
                let tag = text(&consumer_tag).to_string();
                if let Some(c) = self
                    .channels
                    .get_mut(&channel)
                    .and_then(|ch| ch.consumers.remove(tag.as_str()))
                {
                    c.consumer.live.store(false, Ordering::Release);
                    vhost.cancel_consumer(&c.queue, id, channel, &tag);
                }
                if !nowait {
                    conn.send_method(channel, &Method::BasicCancelOk { consumer_tag });
                }
            }
            Method::BasicGet { queue, no_ack, .. } => {
                let name = self.queue_name(channel, &queue)?;
                self.permit(Access::Read, "queue", &name)?;
                let q = vhost.queue(&name, id)?;
                if q.is_stream() {
                    return Err(CoreError::NotImplemented(format!(
                        "basic.get not supported by stream queues queue '{name}' in vhost '{}'",
                        self.vhost_name()
                    )));
                }
                match q.get(no_ack) {
                    None => conn.send_method(
                        channel,
                        &Method::BasicGetEmpty {
                            cluster_id: ShortStr::default(),
                        },
                    ),
                    Some((entry, left)) => {
                        let Some(ch) = self.channels.get_mut(&channel) else {
                            return Ok(());
                        };
                        ch.last_delivery_tag += 1;
                        let tag = ch.last_delivery_tag;
                        let m = &entry.message;
                        conn.send_content(
                            channel,
                            &Method::BasicGetOk {
                                delivery_tag: tag,
                                redelivered: entry.redelivered,
                                exchange: ShortStr::from_bytes(m.exchange.clone()),
                                routing_key: ShortStr::from_bytes(m.routing_key.clone()),
                                message_count: left as u32,
                            },
                            &props::to_wire(&m.properties),
                            &m.body,
                        );
                        if !no_ack {
                            ch.unacked.push_back(Unacked {
                                tag,
                                queue: q,
                                entry,
                                consumer: None,
                            });
                        }
                    }
                }
            }
            Method::BasicAck {
                delivery_tag,
                multiple,
            } => self.settle(channel, delivery_tag, multiple, Outcome::Ack)?,
            Method::BasicNack {
                delivery_tag,
                multiple,
                requeue,
            } => self.settle(
                channel,
                delivery_tag,
                multiple,
                if requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Discard
                },
            )?,
            Method::BasicReject {
                delivery_tag,
                requeue,
            } => self.settle(
                channel,
                delivery_tag,
                false,
                if requeue {
                    Outcome::Requeue
                } else {
                    Outcome::Discard
                },
            )?,
            Method::BasicRecover { .. } | Method::BasicRecoverAsync { .. } => {
                let async_variant = matches!(method, Method::BasicRecoverAsync { .. });
                if let Some(ch) = self.channels.get_mut(&channel) {
                    let all: Vec<Unacked> = ch.unacked.drain(..).collect();
                    settle(all, Outcome::Requeue);
                }
                if !async_variant {
                    conn.send_method(channel, &Method::BasicRecoverOk);
                }
            }
            Method::ConfirmSelect { nowait } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return Ok(());
                };
                if ch.tx.is_some() {
                    return Err(CoreError::PreconditionFailed(
                        "cannot switch from tx to confirm mode".into(),
                    ));
                }
                ch.confirm_seq.get_or_insert(0);
                if !nowait {
                    conn.send_method(channel, &Method::ConfirmSelectOk);
                }
            }
            Method::TxSelect => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return Ok(());
                };
                if ch.confirm_seq.is_some() {
                    return Err(CoreError::PreconditionFailed(
                        "cannot switch from confirm to tx mode".into(),
                    ));
                }
                ch.tx.get_or_insert_with(Vec::new);
                conn.send_method(channel, &Method::TxSelectOk);
            }
            Method::TxCommit => {
                let ops = match self.channels.get_mut(&channel).and_then(|c| c.tx.as_mut()) {
                    Some(tx) => std::mem::take(tx),
                    None => {
                        return Err(CoreError::PreconditionFailed(
                            "channel is not transactional".into(),
                        ));
                    }
                };
                let mut on_disk = false;
                for op in ops {
                    match op {
                        TxOp::Publish(message, queues) => {
                            on_disk |= vhost.enqueue(&message, &queues).on_disk;
                        }
                        TxOp::Settle { tags, outcome } => {
                            let Some(ch) = self.channels.get_mut(&channel) else {
                                break;
                            };
                            let mut taken = Vec::new();
                            for t in tags {
                                if let Some(mut u) = ch.take_unacked(t, false) {
                                    taken.append(&mut u);
                                }
                            }
                            settle(taken, outcome);
                        }
                    }
                }
                match (
                    on_disk,
                    self.broker.persistence(),
                    self.channels.get(&channel),
                ) {
                    (true, Some(p), Some(ch)) => {
                        // commit-ok only once the committed messages are on disk.
                        let (tx, epoch) = (self.tx.clone(), ch.epoch);
                        p.when_durable(Box::new(move || {
                            let _ = tx.send(Outbound::TxDurable { channel, epoch });
                        }));
                    }
                    _ => conn.send_method(channel, &Method::TxCommitOk),
                }
                self.redispatch_channel(channel);
            }
            Method::TxRollback => {
                match self.channels.get_mut(&channel).and_then(|c| c.tx.as_mut()) {
                    Some(tx) => tx.clear(),
                    None => {
                        return Err(CoreError::PreconditionFailed(
                            "channel is not transactional".into(),
                        ));
                    }
                }
                conn.send_method(channel, &Method::TxRollbackOk);
            }
            other => {
                let (class_id, method_id) = method_ids(&other);
                self.connection_error(
                    conn,
                    reply::COMMAND_INVALID,
                    &format!(
                        "COMMAND_INVALID - unexpected method {class_id}.{method_id} from the client"
                    ),
                    (class_id, method_id),
                );
            }
        }
        Ok(())
    }

    /// exchange.declare (not passive): configure on the exchange and, for a
    /// new one with an `alternate-exchange`, read on it and write on the
    /// alternate, in RabbitMQ's order (an unknown type and the default
    /// exchange are refused as such first).
    fn permit_exchange_declare(
        &self,
        vhost: &VHost,
        name: &str,
        kind: &str,
        arguments: &Table,
    ) -> Result<(), CoreError> {
        let known_kind = kind == "x-delayed-message" || ExchangeKind::parse(kind).is_some();
        if name.is_empty() || !known_kind {
            return Ok(());
        }
        self.permit(Access::Configure, "exchange", name)?;
        if vhost.exchange(name).is_err()
            && !name.starts_with("amq.")
            && let Some(alternate) = arguments
                .get("alternate-exchange")
                .and_then(tributary_core::Value::as_str)
        {
            self.permit(Access::Read, "exchange", name)?;
            self.permit(Access::Write, "exchange", alternate)?;
        }
        Ok(())
    }

    /// queue.bind / unbind and exchange.bind / unbind: write on the
    /// destination, then (unless the default exchange is involved, which the
    /// core refuses) read on the source exchange.
    fn permit_binding(
        &self,
        destination_kind: &str,
        destination: &str,
        source: &str,
    ) -> Result<(), CoreError> {
        self.permit(Access::Write, destination_kind, destination)?;
        let default_involved =
            source.is_empty() || (destination_kind == "exchange" && destination.is_empty());
        if !default_involved {
            self.permit(Access::Read, "exchange", source)?;
        }
        Ok(())
    }

    /// queue.declare (not passive): configure on the queue (a server-named
    /// one is checked under its `amq.gen-…` name) and, for a new queue with
    /// an `x-dead-letter-exchange`, read on the queue and write on that
    /// exchange; then the declaration itself.
    fn declare_queue_permitted(
        &self,
        vhost: &VHost,
        name: &str,
        options: QueueOptions,
    ) -> Result<tributary_core::DeclaredQueue, CoreError> {
        let id = self.id;
        if name.starts_with("amq.") {
            // Refused as a reserved name first, as in RabbitMQ.
            return vhost.declare_queue(name, false, options, id);
        }
        let dead_letter = options
            .arguments
            .get("x-dead-letter-exchange")
            .and_then(tributary_core::Value::as_str)
            .map(str::to_string);
        let check = |queue: &str, new: bool| -> Result<(), CoreError> {
            self.permit(Access::Configure, "queue", queue)?;
            if new && let Some(x) = &dead_letter {
                self.permit(Access::Read, "queue", queue)?;
                self.permit(Access::Write, "exchange", x)?;
            }
            Ok(())
        };
        if !name.is_empty() {
            let new = matches!(vhost.queue(name, id), Err(CoreError::NotFound(_)));
            check(name, new)?;
            return vhost.declare_queue(name, false, options, id);
        }
        // The core names the queue; check a name of the same shape first, then
        // the real one (a pattern can only tell them apart by their random part).
        check(&tributary_core::naming::unique_name("amq.gen-"), true)?;
        let declared = vhost.declare_queue("", false, options, id)?;
        if let Err(e) = check(declared.queue.name(), true) {
            vhost.remove_queue(&declared.queue);
            return Err(e);
        }
        Ok(declared)
    }

    /// basic.consume on a stream queue: a reader task from `x-stream-offset` (see
    /// `stream_consumer`).
    #[allow(clippy::too_many_arguments)]
    fn consume_stream(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        q: Arc<tributary_core::Queue>,
        consumer_tag: ShortStr,
        no_ack: bool,
        nowait: bool,
        arguments: &Table,
    ) -> Result<(), CoreError> {
        use super::stream_consumer;
        self.permit(Access::Read, "queue", q.name())?;
        let Some(log) = q.stream().cloned() else {
            return Err(CoreError::NotFound(format!(
                "no queue '{}' in vhost '{}'",
                q.name(),
                self.vhost_name()
            )));
        };
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        stream_consumer::check_consume(q.name(), q.vhost_name(), ch.consumer_prefetch, no_ack)?;
        let start = tributary_core::stream::parse_start(
            arguments.get("x-stream-offset"),
            tributary_core::args::now_ms(),
        )?;
        let tag: Arc<str> = if consumer_tag.is_empty() {
            tributary_core::naming::unique_name("amq.ctag-").into()
        } else {
            text(&consumer_tag).into()
        };
        if ch.consumers.contains_key(&tag) {
            let text = format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'");
            self.connection_error(conn, reply::NOT_ALLOWED, &text, (60, 20));
            return Ok(());
        }
        let consumer = Arc::new(AmqpConsumer {
            channel,
            tag: tag.clone(),
            wire_tag: ShortStr::from(&*tag),
            no_ack: false,
            prefetch: ch.consumer_prefetch,
            unacked: AtomicU32::new(0),
            channel_credit: ch.credit.clone(),
            connection: self.credit.clone(),
            tx: self.tx.clone(),
            live: AtomicBool::new(true),
        });
        let wake = Arc::new(tokio::sync::Notify::new());
        ch.consumers.insert(
            tag.clone(),
            ChannelConsumer {
                queue: q.clone(),
                consumer: consumer.clone(),
                stream_wake: Some(wake.clone()),
            },
        );
        if !nowait {
            conn.send_method(
                channel,
                &Method::BasicConsumeOk {
                    consumer_tag: ShortStr::from(&*tag),
                },
            );
        }
        let filter = stream_consumer::StreamFilter::from_arguments(arguments);
        stream_consumer::spawn(q, log, start, consumer, filter, wake);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn consume(
        &mut self,
        conn: &mut Connection,
        channel: u16,
        vhost: &Arc<VHost>,
        queue: ShortStr,
        consumer_tag: ShortStr,
        priority: i32,
        no_ack: bool,
        exclusive: bool,
        nowait: bool,
    ) -> Result<(), CoreError> {
        let name = self.queue_name(channel, &queue)?;
        self.permit(Access::Read, "queue", &name)?;
        let q = vhost.queue(&name, self.id)?;
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        let tag: Arc<str> = if consumer_tag.is_empty() {
            tributary_core::naming::unique_name("amq.ctag-").into()
        } else {
            text(&consumer_tag).into()
        };
        if ch.consumers.contains_key(&tag) {
            let text = format!("NOT_ALLOWED - attempt to reuse consumer tag '{tag}'");
            self.connection_error(conn, reply::NOT_ALLOWED, &text, (60, 20));
            return Ok(());
        }
        let consumer = Arc::new(AmqpConsumer {
            channel,
            tag: tag.clone(),
            wire_tag: ShortStr::from(&*tag),
            no_ack,
            prefetch: ch.consumer_prefetch,
            unacked: AtomicU32::new(0),
            channel_credit: ch.credit.clone(),
            connection: self.credit.clone(),
            tx: self.tx.clone(),
            live: AtomicBool::new(true),
        });
        ch.consumers.insert(
            tag.clone(),
            ChannelConsumer {
                queue: q.clone(),
                consumer: consumer.clone(),
                stream_wake: None,
            },
        );
        if let Err(e) = q.add_consumer(
            tag.clone(),
            self.id,
            channel,
            ConsumerOptions {
                exclusive,
                no_ack,
                priority,
            },
            Arc::new(Sink(consumer)),
        ) {
            if let Some(ch) = self.channels.get_mut(&channel) {
                ch.consumers.remove(&tag);
            }
            return Err(e);
        }
        // consume-ok only once attached; deliveries wait in the connection's
        // outbound channel and are written after it.
        if !nowait {
            conn.send_method(
                channel,
                &Method::BasicConsumeOk {
                    consumer_tag: ShortStr::from(&*tag),
                },
            );
        }
        Ok(())
    }

    fn settle(
        &mut self,
        channel: u16,
        tag: u64,
        multiple: bool,
        outcome: Outcome,
    ) -> Result<(), CoreError> {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ok(());
        };
        let unknown = || CoreError::PreconditionFailed(format!("unknown delivery tag {tag}"));
        if let Some(tx) = ch.tx.as_ref() {
            if !ch.knows(tag, multiple) {
                return Err(unknown());
            }
            let mut tags: Vec<u64> = if multiple {
                ch.unacked
                    .iter()
                    .map(|u| u.tag)
                    .filter(|t| tag == 0 || *t <= tag)
                    .collect()
            } else {
                vec![tag]
            };
            let already: Vec<u64> = tx
                .iter()
                .filter_map(|op| match op {
                    TxOp::Settle { tags, .. } => Some(tags.clone()),
                    TxOp::Publish(..) => None,
                })
                .flatten()
                .collect();
            if !multiple && already.contains(&tag) {
                return Err(unknown());
            }
            tags.retain(|t| !already.contains(t));
            if let Some(tx) = ch.tx.as_mut() {
                tx.push(TxOp::Settle { tags, outcome });
            }
            return Ok(());
        }
        let taken = ch.take_unacked(tag, multiple).ok_or_else(unknown)?;
        settle(taken, outcome);
        self.redispatch_channel(channel);
        Ok(())
    }
}
