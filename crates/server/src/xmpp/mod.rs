//! The XMPP service: client streams over TCP (STARTTLS), direct TLS and
//! WebSocket, all driving the sans-IO machines of `tributary-xmpp`.
//!
//! One [`XmppContext`] holds the IM state ([`Hub`]) behind a mutex and a
//! mailbox per bound session. The hub's effects are applied while the mutex
//! is held, so durable changes reach the store in the order the hub made
//! them and stanzas reach each session in routing order.

pub mod bridge;
pub mod s2s;
pub mod session;
pub mod transport;
pub mod upload;

use crate::config::XmppConfig;
use crate::users::UserDb;
use jid::FullJid;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tributary_store::Store;
use tributary_xmpp::c2s::SmState;
use tributary_xmpp::hub::{Accounts, Hub, HubConfig, Output, SessionId};
use tributary_xmpp_xml::Element;

/// Stanzas queued for one session before it counts as not reading; past
/// this (or `[limits] max_buffered_bytes` of them) the session is closed
/// rather than buffered without bound.
const MAILBOX: usize = 4096;

/// The `[limits]` that apply to XMPP connections.
#[derive(Debug, Clone)]
pub struct XmppLimits {
    /// Connection limits shared with the other protocols.
    pub connections: Arc<crate::limits::Limits>,
    /// Time from connecting to a bound resource.
    pub handshake_timeout: Duration,
    /// Stanzas per second a connection may send (0 = no limit).
    pub stanza_rate: u32,
    /// Stanzas a connection may send at once above the rate.
    pub stanza_burst: u32,
    /// Bytes of stanzas a session's mailbox may hold.
    pub max_buffered_bytes: usize,
    /// `[auth] failure_delay_ms`: wait before a SASL failure is sent.
    pub auth_failure_delay: Duration,
}

/// What the rest of the server sends to a session's task.
pub enum SessionMsg {
    /// A stanza to send to the client.
    Deliver(Element),
    /// End the stream with this stream error.
    Close(&'static str, Option<String>),
    /// Another stream resumes this session (XEP-0198): hand it over.
    TakeOver(oneshot::Sender<Detached>),
}

/// A session handed from its old connection to a resuming one.
pub struct Detached {
    /// The session's id in the hub.
    pub session: SessionId,
    /// Its full JID.
    pub jid: FullJid,
    /// Stream-management counters and unacknowledged stanzas.
    pub sm: SmState,
    /// The session's mailbox.
    pub mailbox: MailboxReceiver,
}

struct SessionHandle {
    mailbox: MailboxSender,
    kill: CancellationToken,
}

/// The sending side of a session's mailbox: bounded in stanzas and, by an
/// estimate of their serialized size, in bytes.
#[derive(Clone)]
pub struct MailboxSender {
    tx: crate::mailbox::UnboundedSender<(SessionMsg, usize)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    drained: Arc<tokio::sync::Notify>,
}

/// The receiving side of a session's mailbox.
pub struct MailboxReceiver {
    rx: crate::mailbox::Receiver<(SessionMsg, usize)>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    drained: Arc<tokio::sync::Notify>,
}

/// The mailbox is full (in stanzas or bytes), or its session is gone.
#[derive(Debug)]
pub struct MailboxFull;

impl MailboxSender {
    /// Queues a message without waiting. A stanza that would take the
    /// mailbox past its byte limit is refused, unless the mailbox is empty
    /// (so one large stanza still goes through).
    pub fn try_send(&self, msg: SessionMsg) -> Result<(), MailboxFull> {
        let size = match &msg {
            SessionMsg::Deliver(stanza) => approx_size(stanza),
            _ => 0,
        };
        let before = self.queued.fetch_add(size, Ordering::AcqRel);
        if (before > 0 && before + size > self.max_bytes)
            || self.tx.try_send_bounded((msg, size), MAILBOX).is_err()
        {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            return Err(MailboxFull);
        }
        Ok(())
    }

    /// More than half full: senders should wait before adding to it.
    pub fn congested(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.max_bytes / 2 || self.tx.len() > MAILBOX / 2
    }

    /// Waits until `deadline` for the mailbox to be no longer congested;
    /// false if it still is.
    pub async fn wait_uncongested(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.drained.notified();
            if !self.congested() || self.tx.is_closed() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.congested();
            }
        }
    }

    /// Queues a control message (no stanza), even past the bound: there
    /// are only a few (close, take over).
    async fn send_control(&self, msg: SessionMsg) -> Result<(), MailboxFull> {
        self.tx.send((msg, 0)).map_err(|_| MailboxFull)
    }
}

impl MailboxReceiver {
    /// The next message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<SessionMsg> {
        let (msg, size) = self.rx.recv().await?;
        self.took(size);
        Some(msg)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<SessionMsg> {
        let (msg, size) = self.rx.try_recv()?;
        self.took(size);
        Some(msg)
    }

    fn took(&self, size: usize) {
        let left = self.queued.fetch_sub(size, Ordering::AcqRel) - size;
        if left <= self.max_bytes / 2 && self.rx.len() < MAILBOX / 2 {
            self.drained.notify_waiters();
        }
    }
}

/// Roughly the bytes `element` takes serialized (names, attributes, text,
/// and the markup around them), without serializing it.
pub fn approx_size(element: &Element) -> usize {
    let mut total = 0;
    let mut stack = vec![element];
    while let Some(e) = stack.pop() {
        total += 2 * e.name.len() + e.ns.len() + 16;
        for a in &e.attrs {
            total += a.name.len() + a.value.len() + 4;
        }
        for child in &e.children {
            match child {
                tributary_xmpp_xml::Node::Element(c) => stack.push(c),
                tributary_xmpp_xml::Node::Text(t) => total += t.len(),
            }
        }
    }
    total
}

/// Shared state of the XMPP service.
pub struct XmppContext {
    /// Configuration.
    pub config: XmppConfig,
    /// Accounts.
    pub users: Arc<UserDb>,
    /// Data directory (registration writes the user database there).
    pub data_dir: PathBuf,
    /// TLS, if a certificate could be set up.
    pub tls: Option<crate::tls::TlsSetup>,
    /// Stops every session on shutdown.
    pub shutdown: CancellationToken,
    /// Random per-process secret for fake SCRAM salts.
    pub secret: [u8; 32],
    /// Connection limits, timeouts and rates.
    pub limits: XmppLimits,
    store: Arc<Store>,
    hub: Mutex<Hub>,
    sessions: Mutex<HashMap<SessionId, SessionHandle>>,
    resumable: Mutex<HashMap<String, (SessionId, String)>>,
    next_session: AtomicU64,
    bridge: std::sync::OnceLock<Arc<bridge::Bridge>>,
    s2s: std::sync::OnceLock<Arc<s2s::S2s>>,
    upload: Option<Arc<upload::Upload>>,
}

struct UserAccounts<'a>(&'a UserDb);

impl Accounts for UserAccounts<'_> {
    fn exists(&self, username: &str) -> bool {
        self.0.exists(username)
    }
}

impl XmppContext {
    /// Read-only summaries of the MUC rooms and publish-subscribe nodes
    /// (for the management API).
    pub fn listing(
        &self,
    ) -> (
        Vec<tributary_xmpp::hub::RoomSummary>,
        Vec<tributary_xmpp::hub::NodeSummary>,
    ) {
        let hub = self.hub.lock();
        (hub.rooms(), hub.pubsub_nodes())
    }

    /// Builds the service and restores its persisted state from the store.
    pub fn new(
        config: XmppConfig,
        limits: XmppLimits,
        users: Arc<UserDb>,
        store: Arc<Store>,
        data_dir: PathBuf,
        tls: Option<crate::tls::TlsSetup>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut hub = Hub::new(HubConfig {
            domain: config.domain.clone(),
            software_name: "Tributary".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            max_offline_per_user: config.max_offline_messages,
            bridge_domains: if config.bridge {
                vec![
                    format!("bridge.{}", config.domain),
                    format!("topics.{}", config.domain),
                ]
            } else {
                Vec::new()
            }
            .into_iter()
            .chain(config.upload_jid())
            .collect(),
            pubsub_domain: config.pubsub_jid(),
            disco_services: config.upload_jid().into_iter().collect(),
            muc_domain: config.muc_jid(),
            mam_max_messages: config.mam_max_messages,
            federation: config.s2s.enabled,
        });
        let upload = match config.upload_jid() {
            Some(domain) => Some(Arc::new(upload::Upload::open(
                domain,
                &data_dir,
                config.upload_max_file_size,
                config.upload_quota_per_user,
                config.upload_url.clone(),
            )?)),
            None => None,
        };
        for table in Hub::TABLES {
            let rows = store.meta_list(table)?;
            hub.restore(table, rows)?;
        }
        // Shared with AMQP and MQTT: an unknown user's fake salt is the same on every protocol.
        let secret = *crate::scram::fake_secret();
        Ok(XmppContext {
            config,
            limits,
            users,
            data_dir,
            tls,
            shutdown,
            secret,
            store,
            hub: Mutex::new(hub),
            sessions: Mutex::new(HashMap::new()),
            resumable: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            bridge: std::sync::OnceLock::new(),
            s2s: std::sync::OnceLock::new(),
            upload,
        })
    }

    /// Attaches the bridge to the other protocols (once, at start).
    pub fn set_bridge(&self, bridge: Arc<bridge::Bridge>) {
        let _ = self.bridge.set(bridge);
    }

    /// Attaches federation (once, at start).
    pub fn set_s2s(&self, s2s: Arc<s2s::S2s>) {
        let _ = self.s2s.set(s2s);
    }

    /// A stanza from another server (its domain authenticated by the
    /// server-to-server stream) to one of our JIDs.
    pub fn handle_remote_stanza(&self, stanza: Element) {
        let accounts = UserAccounts(&self.users);
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        hub.handle_remote_stanza(stanza, &accounts, now_ms(), &mut out);
        let bridged = self.apply(out);
        drop(hub);
        self.run_bridge(bridged);
    }

    /// A stanza federation could not deliver: bounced to its local sender.
    pub fn remote_failed(&self, stanza: &Element, condition: &'static str) {
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        hub.remote_failed(stanza, condition, &mut out);
        self.apply(out);
    }

    /// The bridge, when enabled.
    pub fn bridge(&self) -> Option<&Arc<bridge::Bridge>> {
        self.bridge.get()
    }

    /// A stanza from the bridge to a local user (stored offline if need be).
    pub fn deliver_from_bridge(&self, stanza: Element) -> bool {
        let accounts = UserAccounts(&self.users);
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        let delivered = hub.deliver_from_bridge(stanza, &accounts, now_ms(), &mut out);
        let bridged = self.apply(out);
        drop(hub);
        self.run_bridge(bridged);
        delivered
    }

    /// Hands stanzas for the bridge over, and their replies back to the
    /// senders; called without the hub locked.
    fn run_bridge(&self, bridged: Vec<(SessionId, Element)>) {
        let bridged = self.run_upload(bridged);
        let Some(bridge) = self.bridge() else { return };
        for (session, stanza) in bridged {
            for reply in bridge.handle_xmpp(&stanza) {
                if let Some(handle) = self.sessions.lock().get(&session)
                    && handle.mailbox.try_send(SessionMsg::Deliver(reply)).is_err()
                {
                    handle.kill.cancel();
                }
            }
        }
    }

    /// A fresh session id.
    pub fn new_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Binds a resource for `session`, whose mailbox is registered first so
    /// that the hub can deliver to it at once.
    pub fn bind(
        &self,
        session: SessionId,
        username: &str,
        resource: Option<&str>,
        mailbox: MailboxSender,
        kill: CancellationToken,
    ) -> Result<FullJid, (&'static str, &'static str)> {
        self.sessions
            .lock()
            .insert(session, SessionHandle { mailbox, kill });
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        let result = hub.bind(session, username, resource, &mut out);
        self.apply(out);
        drop(hub);
        result.map_err(|e| {
            self.sessions.lock().remove(&session);
            (e.kind, e.condition)
        })
    }

    /// A stanza from a bound session. Returns the mailboxes of other
    /// sessions it went to that are more than half full: the sender waits
    /// for them before reading more, so a fast sender is slowed down
    /// instead of its recipients being disconnected.
    pub fn handle_stanza(
        &self,
        session: SessionId,
        stanza: Element,
    ) -> Vec<(MailboxSender, CancellationToken)> {
        let accounts = UserAccounts(&self.users);
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        hub.handle_stanza(session, stanza, &accounts, now_ms(), &mut out);
        let congested = {
            let sessions = self.sessions.lock();
            let mut seen = Vec::new();
            let mut congested = Vec::new();
            for o in &out {
                if let Output::Deliver { session: to, .. } = o
                    && *to != session
                    && !seen.contains(to)
                    && let Some(handle) = sessions.get(to)
                {
                    seen.push(*to);
                    congested.push((handle.mailbox.clone(), handle.kill.clone()));
                }
            }
            congested
        };
        let bridged = self.apply(out);
        drop(hub);
        self.run_bridge(bridged);
        congested
            .into_iter()
            .filter(|(mailbox, _)| mailbox.congested())
            .collect()
    }

    /// Makes a session resumable under its stream-management id.
    pub fn register_resumable(&self, id: &str, session: SessionId, username: &str) {
        self.resumable
            .lock()
            .insert(id.to_string(), (session, username.to_string()));
    }

    /// Asks the session registered under `previd` to hand itself over; only
    /// the account that owns it may resume it.
    pub async fn take_over(&self, previd: &str, username: &str) -> Option<Detached> {
        let session = match self.resumable.lock().get(previd) {
            Some((session, owner)) if owner == username => *session,
            _ => return None,
        };
        let mailbox = self.sessions.lock().get(&session)?.mailbox.clone();
        let (tx, rx) = oneshot::channel();
        mailbox.send_control(SessionMsg::TakeOver(tx)).await.ok()?;
        let detached = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()?;
        self.resumable.lock().remove(previd);
        Some(detached)
    }

    /// A resumed session now runs on a new connection with a new kill switch.
    pub fn adopt(&self, session: SessionId, kill: CancellationToken) {
        if let Some(handle) = self.sessions.lock().get_mut(&session) {
            handle.kill = kill;
        }
    }

    /// The session ended for good: tell the hub, and give back what the
    /// client never acknowledged.
    pub fn end_session(&self, session: SessionId, jid: Option<&FullJid>, unacked: Vec<Element>) {
        self.sessions.lock().remove(&session);
        self.resumable.lock().retain(|_, (s, _)| *s != session);
        let accounts = UserAccounts(&self.users);
        let mut hub = self.hub.lock();
        let mut out = Vec::new();
        hub.unbind(session, now_ms(), &mut out);
        if let Some(jid) = jid
            && !unacked.is_empty()
        {
            hub.requeue_unacked(jid, unacked, &accounts, now_ms(), &mut out);
        }
        self.apply(out);
    }

    /// Registers a new account (XEP-0077).
    pub fn register_account(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(), (&'static str, &'static str)> {
        if !self.config.registration {
            return Err(("cancel", "not-allowed"));
        }
        if jid::BareJid::new(&format!("{username}@{}", self.config.domain)).is_err()
            || username.contains(['@', '/'])
        {
            return Err(("modify", "jid-malformed"));
        }
        let admin = crate::users::UserAdmin::open(&self.data_dir).map_err(|e| {
            tracing::error!(error = %e, "registration: cannot open the user database");
            ("wait", "internal-server-error")
        })?;
        match admin.add(username, password, Vec::new()) {
            Ok(()) => {
                tracing::info!(username, "account registered in-band");
                Ok(())
            }
            Err(crate::users::UserError::Exists(_)) => Err(("cancel", "conflict")),
            Err(e) => {
                tracing::error!(error = %e, "registration failed");
                Err(("wait", "internal-server-error"))
            }
        }
    }

    /// Applies hub effects in order; called with the hub locked. Returns
    /// the stanzas for the bridge, which must be handled after the hub is
    /// unlocked (the bridge publishes into the core, whose consumers may
    /// come back to the hub).
    fn apply(&self, out: Vec<Output>) -> Vec<(SessionId, Element)> {
        let mut bridged = Vec::new();
        // The state changes first, all in one transaction (one fsync, not one per change: a
        // chat message archived on both sides is two puts), and before any delivery.
        let ops: Vec<tributary_store::MetaOp<'_>> = out
            .iter()
            .filter_map(|o| match o {
                Output::Put { table, key, value } => {
                    Some(tributary_store::MetaOp::Put { table, key, value })
                }
                Output::Delete { table, key } => {
                    Some(tributary_store::MetaOp::Delete { table, key })
                }
                _ => None,
            })
            .collect();
        if let Err(e) = self.store.meta_apply(&ops) {
            tracing::error!(error = %e, changes = ops.len(), "cannot persist XMPP state");
        }
        drop(ops);
        let sessions = self.sessions.lock();
        for output in out {
            match output {
                Output::Put { .. } | Output::Delete { .. } => {}
                Output::Deliver { session, stanza } => {
                    if let Some(handle) = sessions.get(&session)
                        && handle
                            .mailbox
                            .try_send(SessionMsg::Deliver(stanza))
                            .is_err()
                    {
                        tracing::warn!(session, "XMPP session does not read; closing it");
                        handle.kill.cancel();
                    }
                }
                Output::Close {
                    session,
                    condition,
                    text,
                } => {
                    if let Some(handle) = sessions.get(&session)
                        && handle
                            .mailbox
                            .try_send(SessionMsg::Close(condition, text))
                            .is_err()
                    {
                        handle.kill.cancel();
                    }
                }
                Output::Bridge { session, stanza } => bridged.push((session, stanza)),
                Output::Remote { stanza } => {
                    if let Some(s2s) = self.s2s.get() {
                        s2s.send(stanza);
                    }
                }
            }
        }
        bridged
    }
}

/// A mailbox for a new session, holding at most `max_bytes` of stanzas
/// (and [`MAILBOX`] messages).
pub fn mailbox(max_bytes: usize) -> (MailboxSender, MailboxReceiver) {
    // Allocates nothing until the first stanza (memory per idle connection).
    let (tx, rx) = crate::mailbox::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(tokio::sync::Notify::new());
    (
        MailboxSender {
            tx,
            queued: queued.clone(),
            max_bytes,
            drained: drained.clone(),
        },
        MailboxReceiver {
            rx,
            queued,
            max_bytes,
            drained,
        },
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
