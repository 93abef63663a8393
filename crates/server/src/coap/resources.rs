//! The resources: `/ps/<topic>` (publish, retained GET, Observe, DELETE),
//! `/ps` and `/.well-known/core` (RFC 6690 link format), and the answers
//! to bad requests (docs/coap.md).

use super::content;
use super::server::{Inbound, Login, Observation, Server};
use crate::users::Access;
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tributary_coap::block::{self, Block, BlockError, Progress};
use tributary_coap::observe::ObserveRequest;
use tributary_coap::{Assembler, Code, Message, ObserveSequence, Type, option};
use tributary_core::{
    ConsumerOptions, Delivery, Message as CoreMessage, Properties, QueueOptions, Table, Value,
};
use tributary_mqtt::topic::{
    filter_to_routing_key, routing_key_to_topic, topic_to_routing_key, validate_topic_filter,
    validate_topic_name,
};

/// The exchange topics live on (as for MQTT).
const TOPIC_EXCHANGE: &str = "amq.topic";
/// Headers set as an MQTT publish sets them (docs/bridging.md).
const QOS_HEADER: &str = "x-mqtt-publish-qos";
const PUBLISHER_HEADER: &str = "x-mqtt-publisher";
const RETAIN_HEADER: &str = "x-mqtt-retain";
/// Max-Age (seconds) of the 5.03 a registration beyond
/// `max_observations_per_peer` gets: when to try again.
const OBSERVATIONS_FULL_MAX_AGE: u32 = 60;
/// The first Location-Path of a notification's matching topic (the
/// resource it names is `/ps/<topic>`).
const PS: &[u8] = b"ps";
/// Topics with more levels than this get no Location-Path in notifications.
const MAX_LOCATION_SEGMENTS: usize = 32;
/// Our preferred block size exponent (1024-byte blocks).
const SZX: u8 = Block::MAX_SZX;
/// Characters escaped in a link-format path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'/')
    .add(b',')
    .add(b';');

/// What a request gets.
enum Reply {
    /// This response now.
    Now(Message),
    /// The response is sent later (after the publish is durable).
    Later,
}

fn response(code: Code) -> Message {
    Message::new(Type::Ack, code, 0)
}

fn error(code: Code, diagnostic: &str) -> Reply {
    let mut m = response(code);
    m.payload = Bytes::copy_from_slice(diagnostic.as_bytes());
    Reply::Now(m)
}

/// The query parameters we read.
#[derive(Default)]
struct Query {
    user: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    retain: bool,
}

fn parse_query(req: &Message) -> Result<Query, ()> {
    let mut q = Query::default();
    for v in req.options(option::URI_QUERY) {
        let s = std::str::from_utf8(v).map_err(|_| ())?;
        let (k, v) = s.split_once('=').unwrap_or((s, ""));
        match k {
            "u" | "username" => q.user = Some(v.to_string()),
            "p" | "password" => q.password = Some(v.to_string()),
            "c" | "clientid" => q.client_id = Some(v.to_string()),
            "retain" | "r" => q.retain = matches!(v, "" | "1" | "true"),
            _ => {}
        }
    }
    Ok(q)
}

impl Server {
    /// Answers one request.
    pub(super) fn request(&mut self, addr: SocketAddr, req: Message, now: Instant) {
        let reply = self.handle(addr, &req, now);
        let Reply::Now(mut resp) = reply else {
            return;
        };
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        // No-Response (RFC 7967): suppress the classes the client asked not to hear.
        let suppress = req
            .uint_option(option::NO_RESPONSE)
            .and_then(Result::ok)
            .unwrap_or(0);
        let bit = match resp.code.class() {
            2 => 2,
            4 => 8,
            5 => 16,
            _ => 0,
        };
        if suppress & bit != 0 {
            p.endpoint.respond_empty(&req);
        } else {
            resp.mtype = Type::Ack;
            p.endpoint.respond(&req, resp);
        }
        self.touch(addr);
    }

    fn handle(&mut self, addr: SocketAddr, req: &Message, now: Instant) -> Reply {
        if let Some(n) = option::unknown_critical(&req.options) {
            return error(Code::BAD_OPTION, &format!("unknown critical option {n}"));
        }
        let Ok(path) = req
            .path()
            .into_iter()
            .map(|s| std::str::from_utf8(s).map(str::to_string))
            .collect::<Result<Vec<String>, _>>()
        else {
            return error(Code::BAD_REQUEST, "Uri-Path is not UTF-8");
        };
        let Ok(query) = parse_query(req) else {
            return error(Code::BAD_REQUEST, "Uri-Query is not UTF-8");
        };
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            [".well-known", "core"] | ["ps"] => {
                if req.code != Code::GET {
                    return error(Code::METHOD_NOT_ALLOWED, "GET only");
                }
                let login = match self.login(addr, &query) {
                    Ok(l) => l,
                    Err(r) => return r,
                };
                let body = Bytes::from(self.link_format(&login));
                self.content(addr, req, &path.join("/"), body, Some(40), now)
            }
            ["ps", rest @ ..] => {
                let topic = rest.join("/");
                let login = match self.login(addr, &query) {
                    Ok(l) => l,
                    Err(r) => return r,
                };
                match req.code {
                    Code::PUT | Code::POST => self.publish(addr, req, &query, &login, &topic, now),
                    Code::GET => self.get(addr, req, &login, &path.join("/"), &topic, now),
                    Code::DELETE => self.delete(&login, &topic),
                    _ => error(Code::METHOD_NOT_ALLOWED, "GET, PUT, POST or DELETE"),
                }
            }
            _ => error(Code::NOT_FOUND, "resources live under /ps"),
        }
    }

    /// Who the request acts as: the DTLS identity, else `u`/`p` from the
    /// query, else guest (which by default works from loopback only).
    fn login(&mut self, addr: SocketAddr, q: &Query) -> Result<Login, Reply> {
        let ctx = self.ctx.clone();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return Err(error(Code::INTERNAL_SERVER_ERROR, "no peer"));
        };
        let identity = peer.identity.clone();
        let key = match (&identity, &q.user) {
            (Some(id), None) => (id.clone(), String::new()),
            _ => (
                q.user.clone().unwrap_or_else(|| "guest".into()),
                q.password.clone().unwrap_or_else(|| {
                    if q.user.is_none() {
                        "guest".into()
                    } else {
                        String::new()
                    }
                }),
            ),
        };
        let client_id = q.client_id.clone().unwrap_or_default();
        if let Some(l) = &peer.login
            && l.key == key
            && l.client_id == client_id
        {
            return Ok(l.clone());
        }
        let (vhost_name, user) =
            crate::mqtt::login_target(&ctx.users, &ctx.config.vhost, Some(&key.0));
        let (vhost_name, user) = (vhost_name.to_string(), user.to_string());
        let proven = identity.as_deref() == Some(key.0.as_str()) && q.user.is_none();
        let ok = if proven {
            ctx.users.exists(&user)
        } else {
            ctx.users.authenticate(&user, &key.1, addr.ip()).is_ok()
        };
        if !ok {
            tracing::warn!(peer = %addr, user = %user, "CoAP login refused");
            return Err(error(Code::UNAUTHORIZED, "bad user name or password"));
        }
        let vhost = crate::vhosts::resolve(&ctx.broker, &ctx.users, &vhost_name)
            .filter(|_| ctx.users.vhost_access(&user, &vhost_name));
        let Some(vhost) = vhost else {
            return Err(error(Code::FORBIDDEN, "no access to the vhost"));
        };
        peer.registration.set_user(&user);
        peer.registration.set_vhost(&vhost_name);
        peer.registration.set_client(&client_id);
        let login = Login {
            key,
            user,
            vhost,
            client_id,
        };
        peer.login = Some(login.clone());
        Ok(login)
    }

    /// Whether `login` may `access` (write: publish, read: get/observe)
    /// the topic with routing key `key`: the exchange permission and the
    /// topic permissions, as for MQTT.
    fn may(&self, login: &Login, access: Access, key: &str) -> bool {
        let users = &self.ctx.users;
        let vhost = login.vhost.name();
        if !users.check(&login.user, vhost, access, TOPIC_EXCHANGE) {
            return false;
        }
        if !users.has_topic_permissions(&login.user, vhost) {
            return true;
        }
        let context = crate::users::TopicContext {
            username: &login.user,
            vhost,
            client_id: &login.client_id,
        };
        users.check_topic(&login.user, TOPIC_EXCHANGE, access, key, &context)
    }

    fn publish(
        &mut self,
        addr: SocketAddr,
        req: &Message,
        q: &Query,
        login: &Login,
        topic: &str,
        now: Instant,
    ) -> Reply {
        if topic.is_empty() || validate_topic_name(topic).is_err() {
            return error(Code::BAD_REQUEST, "not a topic name");
        }
        let content_type = match req.uint_option(option::CONTENT_FORMAT) {
            None => None,
            Some(Err(())) => return error(Code::BAD_REQUEST, "bad Content-Format"),
            Some(Ok(f)) => match content::content_type(f) {
                Some(t) => Some(t),
                None => return error(Code::UNSUPPORTED_CONTENT_FORMAT, "unknown Content-Format"),
            },
        };
        let max = self.ctx.config.max_message_size;
        let too_large = || {
            let mut m = response(Code::REQUEST_ENTITY_TOO_LARGE);
            m.add_uint_option(option::SIZE1, max as u32);
            Reply::Now(m)
        };
        if req
            .uint_option(option::SIZE1)
            .and_then(Result::ok)
            .is_some_and(|s| s as usize > max)
        {
            return too_large();
        }
        let key = topic_to_routing_key(topic);
        if !self.may(login, Access::Write, &key) {
            tracing::debug!(peer = %addr, user = %login.user, topic, "CoAP publish refused");
            return error(Code::FORBIDDEN, "no write access to the topic");
        }
        let mut block1 = None;
        let body = match req.option(option::BLOCK1) {
            None if req.payload.len() > max => return too_large(),
            None => req.payload.clone(),
            Some(v) => {
                let Ok(b) = Block::decode(v) else {
                    return error(Code::BAD_REQUEST, "bad Block1");
                };
                block1 = Some(b);
                let upload = topic.to_string();
                let Some(peer) = self.peers.get_mut(&addr) else {
                    return error(Code::INTERNAL_SERVER_ERROR, "no peer");
                };
                if b.num == 0 {
                    peer.add_upload(upload.clone(), Assembler::new(max), now);
                }
                let Some((asm, at)) = peer.uploads.get_mut(&upload) else {
                    return error(
                        Code::REQUEST_ENTITY_INCOMPLETE,
                        "no block 0 before this block",
                    );
                };
                *at = now;
                match asm.feed(b, &req.payload) {
                    Ok(Progress::Continue) => {
                        let mut m = response(Code::CONTINUE);
                        m.add_option(
                            option::BLOCK1,
                            Block {
                                more: true,
                                szx: b.szx.min(SZX),
                                ..b
                            }
                            .encode(),
                        );
                        return Reply::Now(m);
                    }
                    Ok(Progress::Complete(body)) => {
                        peer.uploads.remove(&upload);
                        body
                    }
                    Err(BlockError::TooLarge { .. }) => {
                        peer.uploads.remove(&upload);
                        return too_large();
                    }
                    Err(e) => {
                        peer.uploads.remove(&upload);
                        return error(Code::REQUEST_ENTITY_INCOMPLETE, &e.to_string());
                    }
                }
            }
        };
        let confirmable = req.mtype == Type::Con;
        let message = self.to_message(
            addr,
            login,
            topic,
            content_type,
            body.clone(),
            confirmable,
            q.retain,
        );
        if q.retain {
            crate::mqtt::set_retained(
                &self.ctx.broker,
                &self.ctx.retained,
                &crate::mqtt::scoped(login.vhost.name(), topic),
                (!body.is_empty()).then(|| message.clone()),
            );
        }
        crate::mqtt::route(&login.vhost, &message);
        if let Some(p) = self.peers.get(&addr) {
            p.registration.counters.message_in();
        }
        let mut resp = response(Code::CHANGED);
        if let Some(b) = block1 {
            resp.add_option(option::BLOCK1, Block { more: false, ..b }.encode());
        }
        // Confirmable: QoS 1, acknowledged once routed and durable.
        if confirmable && let Some(persistence) = self.ctx.broker.persistence() {
            let tx = self.tx.clone();
            let request = Box::new(req.clone());
            persistence.when_durable(Box::new(move || {
                let _ = tx.send(Inbound::Respond {
                    peer: addr,
                    request,
                    response: Box::new(resp),
                });
            }));
            return Reply::Later;
        }
        Reply::Now(resp)
    }

    /// The core message for a CoAP publish, as an MQTT publish of QoS 1
    /// (confirmable) or 0 would be.
    #[allow(clippy::too_many_arguments)]
    fn to_message(
        &self,
        addr: SocketAddr,
        login: &Login,
        topic: &str,
        content_type: Option<&str>,
        body: Bytes,
        confirmable: bool,
        retain: bool,
    ) -> Arc<CoreMessage> {
        let qos = u8::from(confirmable);
        let mut headers = Table::default();
        headers.insert(QOS_HEADER, Value::U8(qos));
        let publisher = if login.client_id.is_empty() {
            format!("coap:{addr}")
        } else {
            login.client_id.clone()
        };
        headers.insert(PUBLISHER_HEADER, Value::LongStr(Bytes::from(publisher)));
        if retain {
            headers.insert(RETAIN_HEADER, Value::Bool(true));
        }
        let properties = Properties {
            delivery_mode: Some(if confirmable { 2 } else { 1 }),
            content_type: content_type.map(|t| Bytes::copy_from_slice(t.as_bytes())),
            headers: Some(headers),
            ..Default::default()
        };
        CoreMessage::new(
            Bytes::from_static(TOPIC_EXCHANGE.as_bytes()),
            Bytes::from(topic_to_routing_key(topic)),
            properties,
            body,
        )
    }

    fn get(
        &mut self,
        addr: SocketAddr,
        req: &Message,
        login: &Login,
        path: &str,
        topic: &str,
        now: Instant,
    ) -> Reply {
        let observe = match req.uint_option(option::OBSERVE) {
            Some(Ok(v)) => ObserveRequest::from_value(v),
            Some(Err(())) => return error(Code::BAD_REQUEST, "bad Observe"),
            None => None,
        };
        if observe == Some(ObserveRequest::Register) {
            return self.observe(addr, req, login, path, topic, now);
        }
        if observe == Some(ObserveRequest::Deregister) {
            let id = self
                .peers
                .get(&addr)
                .and_then(|p| p.observations.get(&req.token).copied());
            if let Some(id) = id {
                self.cancel_observation(id);
            }
        }
        let follow_up = req
            .option(option::BLOCK2)
            .and_then(|v| Block::decode(v).ok())
            .is_some_and(|b| b.num > 0);
        if follow_up
            && let Some((body, format, _)) = self
                .peers
                .get(&addr)
                .and_then(|p| p.downloads.get(path))
                .cloned()
        {
            return self.content(addr, req, path, body, format, now);
        }
        if topic.is_empty() || validate_topic_name(topic).is_err() {
            return error(
                Code::BAD_REQUEST,
                "not a topic name (observe filters with Observe=0)",
            );
        }
        if !self.may(login, Access::Read, &topic_to_routing_key(topic)) {
            return error(Code::FORBIDDEN, "no read access to the topic");
        }
        let key = crate::mqtt::scoped(login.vhost.name(), topic);
        let Some(m) = self.ctx.retained.lock().get(&key).cloned() else {
            return error(Code::NOT_FOUND, "no retained message");
        };
        let format = format_of(&m);
        self.content(addr, req, path, m.body.clone(), format, now)
    }

    /// A 2.05 Content with `body`, in Block2 blocks when it is larger than
    /// one block (or the client asked for a smaller one).
    fn content(
        &mut self,
        addr: SocketAddr,
        req: &Message,
        path: &str,
        body: Bytes,
        format: Option<u32>,
        now: Instant,
    ) -> Reply {
        let asked = match req.option(option::BLOCK2).map(|v| Block::decode(v)) {
            None => None,
            Some(Ok(b)) => Some(b),
            Some(Err(_)) => return error(Code::BAD_REQUEST, "bad Block2"),
        };
        let mut m = response(Code::CONTENT);
        if let Some(f) = format {
            m.add_uint_option(option::CONTENT_FORMAT, f);
        }
        let szx = asked.map_or(SZX, |b| b.szx.min(SZX));
        let num = asked.map_or(0, |b| b.num);
        if asked.is_none() && body.len() <= 1 << (szx + 4) {
            m.payload = body;
            return Reply::Now(m);
        }
        let Some((chunk, b)) = block::slice(&body, num, szx) else {
            return error(Code::BAD_OPTION, "block out of range");
        };
        m.add_option(option::BLOCK2, b.encode());
        if num == 0 {
            m.add_uint_option(option::SIZE2, body.len() as u32);
        }
        m.payload = chunk;
        if b.more
            && let Some(p) = self.peers.get_mut(&addr)
        {
            p.add_download(path.to_string(), body, format, now);
        }
        Reply::Now(m)
    }

    fn observe(
        &mut self,
        addr: SocketAddr,
        req: &Message,
        login: &Login,
        path: &str,
        filter: &str,
        now: Instant,
    ) -> Reply {
        if filter.is_empty() || validate_topic_filter(filter).is_err() {
            return error(Code::BAD_REQUEST, "not a topic filter");
        }
        let key = filter_to_routing_key(filter);
        if !self.may(login, Access::Read, &key) {
            return error(Code::FORBIDDEN, "no read access to the topic");
        }
        let (existing, count) = match self.peers.get(&addr) {
            Some(p) => (
                p.observations.get(&req.token).copied(),
                p.observations.len(),
            ),
            None => return error(Code::INTERNAL_SERVER_ERROR, "no peer"),
        };
        // A re-registration (same token) keeps the observation.
        let id = match existing {
            Some(id) => id,
            None => {
                if count >= self.ctx.config.max_observations_per_peer {
                    // RFC 7641 §4.1: the registration falls back to a plain
                    // GET, answered here with 5.03 (no Observe) and when to retry.
                    let mut m = response(Code::SERVICE_UNAVAILABLE);
                    m.add_uint_option(option::MAX_AGE, OBSERVATIONS_FULL_MAX_AGE);
                    m.payload = Bytes::from_static(b"too many observations");
                    return Reply::Now(m);
                }
                match self.start_observation(addr, req, login, path, filter, &key) {
                    Ok(id) => id,
                    Err(r) => return r,
                }
            }
        };
        let retained = (validate_topic_name(filter).is_ok())
            .then(|| {
                self.ctx
                    .retained
                    .lock()
                    .get(&crate::mqtt::scoped(login.vhost.name(), filter))
                    .cloned()
            })
            .flatten();
        let seq = match self.observations.get_mut(&id) {
            Some(o) => o.seq.next_value(),
            None => 0,
        };
        let reply = match retained {
            Some(m) => {
                let format = format_of(&m);
                self.content(addr, req, path, m.body.clone(), format, now)
            }
            None => Reply::Now(response(Code::CONTENT)),
        };
        match reply {
            Reply::Now(mut m) if m.code == Code::CONTENT => {
                m.add_uint_option(option::OBSERVE, seq);
                Reply::Now(m)
            }
            other => other,
        }
    }

    fn start_observation(
        &mut self,
        addr: SocketAddr,
        req: &Message,
        login: &Login,
        path: &str,
        filter: &str,
        key: &str,
    ) -> Result<u64, Reply> {
        let (id, sink, inflight) = self.new_sink();
        let v = login.vhost.clone();
        let name = format!("coap-observe-{}-{id}", self.conn_id);
        let options = QueueOptions {
            durable: false,
            exclusive: true,
            auto_delete: true,
            arguments: Table::default(),
        };
        let failed = |e: tributary_core::CoreError| {
            tracing::warn!(peer = %addr, error = %e, "CoAP observation failed");
            error(Code::INTERNAL_SERVER_ERROR, "cannot observe")
        };
        let q = v
            .declare_queue(&name, false, options, self.conn_id)
            .map_err(failed)?
            .queue;
        if let Err(e) = v.bind_queue(&name, TOPIC_EXCHANGE, key, Table::default(), self.conn_id) {
            v.remove_queue(&q);
            return Err(failed(e));
        }
        let confirmable = match self.ctx.config.notification_type {
            crate::config::NotificationType::Request => req.mtype == Type::Con,
            crate::config::NotificationType::Con => true,
            crate::config::NotificationType::Non => false,
        };
        self.add_observation(
            id,
            Observation {
                peer: addr,
                token: req.token.clone(),
                path: path.to_string(),
                filter: filter.to_string(),
                wildcard: filter.contains(['+', '#']),
                queue: q.clone(),
                vhost: v.clone(),
                seq: ObserveSequence::starting_at(2),
                confirmable,
                inflight,
                sink: sink.clone(),
                notifications: Default::default(),
            },
            &login.user,
        );
        if let Err(e) = q.add_consumer(
            format!("coap-{id}").into(),
            self.conn_id,
            0,
            ConsumerOptions::default(),
            sink,
        ) {
            self.cancel_observation(id);
            return Err(failed(e));
        }
        tracing::debug!(peer = %addr, user = %login.user, key, "CoAP observation");
        Ok(id)
    }

    /// A delivery becomes a notification (settled once handed to the
    /// endpoint: RFC 7641 lets a slow client miss intermediate states).
    pub(super) fn notify(&mut self, id: u64, d: Delivery, now: Instant) {
        d.queue.settle(&d.entry);
        let Some(o) = self.observations.get_mut(&id) else {
            return;
        };
        o.inflight.fetch_sub(1, Ordering::AcqRel);
        let m = d.entry.message.clone();
        let mut n = Message::new(
            if o.confirmable { Type::Con } else { Type::Non },
            Code::CONTENT,
            0,
        );
        n.token = o.token.clone();
        n.add_uint_option(option::OBSERVE, o.seq.next_value());
        o.notifications.fetch_add(1, Ordering::Relaxed);
        let topic = o
            .wildcard
            .then(|| routing_key_to_topic(&String::from_utf8_lossy(&m.routing_key)))
            // Location-Path values are 0 to 255 bytes (RFC 7252 §5.10).
            .filter(|t| {
                t.split('/').count() < MAX_LOCATION_SEGMENTS && t.split('/').all(|s| s.len() <= 255)
            });
        if let Some(topic) = topic {
            // Which topic matched: its resource `/ps/<topic>` as
            // Location-Path options, as the CoAP pub/sub draft does for
            // topic collections (an elective option clients may ignore).
            n.add_option(option::LOCATION_PATH, Bytes::from_static(PS));
            for segment in topic.split('/') {
                n.add_option(
                    option::LOCATION_PATH,
                    Bytes::copy_from_slice(segment.as_bytes()),
                );
            }
        }
        let format = format_of(&m);
        if let Some(f) = format {
            n.add_uint_option(option::CONTENT_FORMAT, f);
        }
        let (addr, path) = (o.peer, o.path.clone());
        let body = m.body.clone();
        if let Some((chunk, b)) = block::slice(&body, 0, SZX).filter(|(_, b)| b.more) {
            n.add_option(option::BLOCK2, b.encode());
            n.add_uint_option(option::SIZE2, body.len() as u32);
            n.payload = chunk;
        } else {
            n.payload = body.clone();
        }
        if let Some(p) = self.peers.get_mut(&addr) {
            if n.options.iter().any(|o| o.number == option::BLOCK2) {
                p.add_download(path, body, format, now);
            }
            p.endpoint.send(n, now);
            p.registration.counters.message_out();
            self.touch(addr);
        }
        d.queue.dispatch();
    }

    /// RFC 6690 links: `/ps` and every retained topic the user may read.
    fn link_format(&self, login: &Login) -> String {
        let mut links = vec![r#"</ps>;rt="core.ps";ct=40"#.to_string()];
        let mut topics: Vec<(String, Option<u32>)> = self
            .ctx
            .retained
            .lock()
            .iter()
            .filter_map(|(k, m)| {
                let (vhost, topic) = crate::mqtt::unscope(k);
                (vhost == login.vhost.name()).then(|| (topic.to_string(), format_of(m)))
            })
            .collect();
        topics.sort();
        for (topic, format) in topics {
            if !self.may(login, Access::Read, &topic_to_routing_key(&topic)) {
                continue;
            }
            let path: Vec<String> = topic
                .split('/')
                .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
                .collect();
            let mut link = format!(r#"</ps/{}>;rt="core.ps.data";obs"#, path.join("/"));
            if let Some(f) = format {
                link.push_str(&format!(";ct={f}"));
            }
            links.push(link);
        }
        links.join(",")
    }

    fn delete(&mut self, login: &Login, topic: &str) -> Reply {
        if topic.is_empty() || validate_topic_name(topic).is_err() {
            return error(Code::BAD_REQUEST, "not a topic name");
        }
        if !self.may(login, Access::Write, &topic_to_routing_key(topic)) {
            return error(Code::FORBIDDEN, "no write access to the topic");
        }
        crate::mqtt::set_retained(
            &self.ctx.broker,
            &self.ctx.retained,
            &crate::mqtt::scoped(login.vhost.name(), topic),
            None,
        );
        Reply::Now(response(Code::DELETED))
    }
}

/// The Content-Format of a core message's content type.
fn format_of(m: &CoreMessage) -> Option<u32> {
    m.properties
        .content_type
        .as_ref()
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(content::format_of)
}
