//! The IM and presence logic (RFC 6121) and the server-side XEPs, sans-IO.
//!
//! The [`Hub`] owns every bound session of the domain, the rosters, offline
//! messages, vCards and blocklists. The IO layer feeds it bind/unbind events
//! and the stanzas clients send, and applies the [`Output`]s it returns, in
//! order: `Put`/`Delete` are made durable before any later `Deliver` leaves.
//! The hub never reads a clock or the disk itself; the time comes in as
//! `now_unix_ms`, the stored state comes in once through [`Hub::restore`].
//!
//! Between local users both halves of every subscription (user's and
//! contact's roster item) are updated in the same call, which keeps them
//! consistent. With federation ([`HubConfig::federation`]) stanzas to other
//! domains leave as [`Output::Remote`] and come in through
//! [`Hub::handle_remote_stanza`] (module `remote`); without it they are
//! answered with `<remote-server-not-found/>`.
//!
//! # Persistence
//!
//! Every value is JSON (`serde_json`). Stanzas and vCards are stored as a
//! flat list of tokens, not a nested tree, so that decoding is iterative and
//! no stanza depth can hit a recursion limit:
//! `[{"s":{"n":"message","ns":"jabber:client","a":[{"n":"to","v":"b@d"}]}},{"t":"hi"},"e"]`
//! (`s` opens an element with its name, namespace and attributes (`ns` on an
//! attribute only when it is prefixed), `t` is text, `"e"` closes).
//!
//! | table | key | value |
//! |---|---|---|
//! | `xmpp_roster` | bare JID of the owner | `{"ver":N,"items":[{"jid","name"?,"groups"?,"sub":"none/to/from/both","ask"?,"approved"?}],"pending":[{"jid","stanza":tokens}]}` |
//! | `xmpp_offline` | `<bare JID>/<sequence, 20 digits>` | `{"stanza":tokens}` (the message with its `<delay/>`) |
//! | `xmpp_vcard` | bare JID | tokens of the `<vCard/>` element |
//! | `xmpp_blocklist` | bare JID | `["jid", ...]` |
//! | `xmpp_pubsub_node`, `xmpp_pubsub_item` | service JID, node (and item id) | see `pubsub::store` |
//!
//! Offline sequence numbers are global and continue after a restore.
//!
//! # Choices where the RFCs leave room
//!
//! - Subscribe to a local JID without an account: the sender's roster goes
//!   to pending-out and nothing is delivered (Prosody's behaviour; it does
//!   not reveal whether the account exists).
//! - Pre-approvals (RFC 6121 §3.4) are supported ([`Hub::PRE_APPROVAL`]).
//! - An inbound `subscribe` that is already pending is not delivered again in
//!   the same session; pending requests are redelivered at every initial
//!   presence until answered. An inbound `subscribe` from someone who already
//!   has a subscription is auto-answered `subscribed` and gets the current
//!   presence (Prosody).
//! - Available and unavailable presence is reflected to the sending resource
//!   too (RFC 6121 §4.2.2, §4.4.2), and server-generated presence (broadcast,
//!   probe answers) carries the recipient's full JID in `to`.
//! - Roster and blocklist pushes have no `from` (RFC 6121 §2.1.6 examples).
//! - `ver` is included in roster results and pushes only for sessions that
//!   asked with a `ver` attribute.
//! - A message addressed to a bare JID goes to every available resource with
//!   the highest non-negative priority; carbon-enabled resources that did not
//!   get it receive a `received` carbon (XEP-0280).
//! - Offline storage skips messages with `<no-store/>` (XEP-0334) and
//!   messages that carry nothing but chat states; stored messages are
//!   delivered at initial presence with a non-negative priority, or when a
//!   session's priority goes from negative to non-negative.
//! - Blocking (XEP-0191): subscription state changes sent by a blocked JID
//!   (`subscribed`, `unsubscribe`, `unsubscribed`) still update the roster (so
//!   both sides stay consistent) but are not shown to the blocking user; a
//!   `subscribe` from a blocked JID is dropped. Blocking sends unavailable
//!   presence both ways; unblocking sends the current presence both ways.
//! - Accounts deleted with [`Hub::remove_account`] unsubscribe from and
//!   revoke every contact first (Prosody's `user-deleted` handling).

mod account;
mod addressing;
mod blocking;
mod carbons;
mod disco;
mod errors;
mod iq;
mod listing;
mod mam;
mod message;
mod muc;
mod offline;
mod persist;
mod presence;
mod pubsub;
mod remote;
mod remote_users;
mod roster;
mod sessions;
mod subscription;
mod vcard;

#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};

use jid::{BareJid, FullJid, Jid};
use tributary_xmpp_xml::Element;

pub use errors::{HubError, StanzaError};
pub use listing::{NodeSummary, RoomSummary};
pub use remote_users::REMOTE_SESSION_BASE;

use crate::ns;

/// Identifies one client connection (one stream) towards the hub. Chosen by
/// the IO layer; the hub only needs it to be unique among live sessions.
pub type SessionId = u64;

/// What the hub needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The XMPP domain served, e.g. `localhost`; local JIDs are `user@domain`.
    pub domain: String,
    /// Software name answered to `jabber:iq:version` (XEP-0092).
    pub software_name: String,
    /// Software version answered to `jabber:iq:version` (XEP-0092).
    pub software_version: String,
    /// Offline messages kept per user; beyond it the sender gets
    /// `<service-unavailable/>` (XEP-0160).
    pub max_offline_per_user: usize,
    /// Domains served by the IO layer rather than the hub (the bridges to
    /// the other protocols): messages and IQs addressed to them come out as
    /// [`Output::Bridge`].
    pub bridge_domains: Vec<String>,
    /// The publish-subscribe service (XEP-0060), `pubsub.<domain>` by
    /// default; `None` disables it (PEP on accounts stays).
    pub pubsub_domain: Option<String>,
    /// Other services listed in the server's disco#items (XEP-0030), such
    /// as the IO layer's `upload.<domain>`.
    pub disco_services: Vec<String>,
    /// The Multi-User Chat service (XEP-0045), `conference.<domain>` by
    /// default; `None` disables it.
    pub muc_domain: Option<String>,
    /// Messages kept per archive (XEP-0313): each account's one-to-one
    /// messages and each room's; the oldest go first. 0 (the default
    /// here; the server sets its own) turns archiving off.
    pub mam_max_messages: usize,
    /// Server-to-server federation: stanzas to other domains come out as
    /// [`Output::Remote`] (off here: `<remote-server-not-found/>`).
    pub federation: bool,
}

impl HubConfig {
    /// Defaults for a domain: this crate's name and version, 1000 offline
    /// messages per user.
    pub fn new(domain: impl Into<String>) -> Self {
        let domain = domain.into();
        HubConfig {
            domain: domain.clone(),
            software_name: "Tributary".to_string(),
            software_version: env!("CARGO_PKG_VERSION").to_string(),
            max_offline_per_user: 1000,
            bridge_domains: Vec::new(),
            pubsub_domain: Some(format!("pubsub.{domain}")),
            disco_services: Vec::new(),
            muc_domain: Some(format!("conference.{domain}")),
            mam_max_messages: 0,
            federation: false,
        }
    }
}

/// Whether an account exists. The user database lives in the server crate;
/// the hub asks when a stanza is addressed to a local JID.
pub trait Accounts {
    /// `username` is the (nodeprepped) localpart.
    fn exists(&self, username: &str) -> bool;
}

/// Any `Fn(&str) -> bool` is an account lookup (handy in tests and glue code).
impl<F: Fn(&str) -> bool> Accounts for F {
    fn exists(&self, username: &str) -> bool {
        self(username)
    }
}

/// Effects for the IO layer, applied IN ORDER: `Put`/`Delete` are written
/// durably (fsynced) before later `Deliver` outputs are sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this stanza on that session's stream.
    Deliver {
        /// The receiving session.
        session: SessionId,
        /// The stanza, `jabber:client`.
        stanza: Element,
    },
    /// Write (insert or replace) a row of one of [`Hub::TABLES`].
    Put {
        /// The table.
        table: &'static str,
        /// The row key.
        key: String,
        /// The encoded row.
        value: Vec<u8>,
    },
    /// Delete a row of one of [`Hub::TABLES`].
    Delete {
        /// The table.
        table: &'static str,
        /// The row key.
        key: String,
    },
    /// A message or IQ from a local user to one of
    /// [`HubConfig::bridge_domains`], `from` already stamped; the IO layer
    /// hands it to the bridge.
    Bridge {
        /// The sending session.
        session: SessionId,
        /// The stanza.
        stanza: Element,
    },
    /// A stanza for another server (federation), `from` stamped, in
    /// `jabber:client`; the IO layer sends it over a server-to-server stream
    /// to the domain of its `to`, and gives it back to [`Hub::remote_failed`]
    /// when that server cannot be reached.
    Remote {
        /// The stanza.
        stanza: Element,
    },
    /// End this session with a stream error (e.g. `conflict` when a resource
    /// is taken over).
    Close {
        /// The session to end.
        session: SessionId,
        /// The stream error condition (RFC 6120 §4.9.3).
        condition: &'static str,
        /// Optional stream error text.
        text: Option<String>,
    },
}

/// The IM and presence router of one domain: sessions, rosters and
/// subscriptions, presence, message routing, offline storage and the
/// server-side IQs. See the module documentation.
pub struct Hub {
    config: HubConfig,
    /// The normalized domain (nameprepped when valid).
    domain: String,
    sessions: HashMap<SessionId, sessions::Session>,
    by_jid: HashMap<FullJid, SessionId>,
    /// Sessions of each user, in bind order (deterministic outputs).
    by_user: HashMap<BareJid, Vec<SessionId>>,
    rosters: HashMap<BareJid, roster::Roster>,
    blocklists: HashMap<BareJid, Vec<Jid>>,
    vcards: HashMap<BareJid, Element>,
    offline: HashMap<BareJid, BTreeMap<u64, Element>>,
    next_offline_seq: u64,
    next_push_id: u64,
    resource_seed: RandomState,
    resource_counter: u64,
    /// Publish-subscribe and PEP (XEP-0060, XEP-0163).
    pubsub: pubsub::PubSub,
    /// Multi-User Chat rooms (XEP-0045).
    muc: muc::Muc,
    /// Message archives (XEP-0313).
    mam: mam::Mam,
    /// Remote JIDs in our rooms and services (federation).
    remote_sessions: remote_users::RemoteSessions,
}

/// Who sent the stanza being handled, and the call's environment.
struct Ctx<'a> {
    /// The sending session.
    session: SessionId,
    /// Its full JID (already stamped as `from`).
    from: FullJid,
    /// Its bare JID.
    user: BareJid,
    /// Account lookups.
    accounts: &'a dyn Accounts,
    /// The current time.
    now: u64,
}

impl Hub {
    /// The store tables this hub persists into, so the server can load them
    /// at start and pass each to [`Hub::restore`].
    pub const TABLES: &'static [&'static str] = &[
        persist::ROSTER_TABLE,
        persist::OFFLINE_TABLE,
        persist::VCARD_TABLE,
        persist::BLOCKLIST_TABLE,
        pubsub::store::NODE_TABLE,
        pubsub::store::ITEM_TABLE,
        muc::ROOM_TABLE,
        mam::ARCHIVE_TABLE,
        mam::PREFS_TABLE,
    ];

    /// Subscription pre-approval (RFC 6121 §3.4) is supported, so the c2s
    /// layer may advertise the `urn:xmpp:features:pre-approval` stream feature.
    pub const PRE_APPROVAL: bool = true;

    /// A hub with no sessions and no stored state.
    pub fn new(config: HubConfig) -> Self {
        let domain = match BareJid::new(&config.domain) {
            Ok(jid) if jid.node().is_none() => jid.to_string(),
            _ => config.domain.clone(),
        };
        Hub {
            pubsub: pubsub::PubSub::new(config.pubsub_domain.clone()),
            muc: muc::Muc {
                domain: config.muc_domain.as_deref().map(normalize_domain),
                ..muc::Muc::default()
            },
            mam: mam::Mam::default(),
            config,
            domain,
            sessions: HashMap::new(),
            by_jid: HashMap::new(),
            by_user: HashMap::new(),
            rosters: HashMap::new(),
            blocklists: HashMap::new(),
            vcards: HashMap::new(),
            offline: HashMap::new(),
            next_offline_seq: 1,
            next_push_id: 1,
            resource_seed: RandomState::new(),
            resource_counter: 0,
            remote_sessions: Default::default(),
        }
    }

    /// Restores one table's rows at startup (before any session binds).
    pub fn restore(&mut self, table: &str, rows: Vec<(String, Vec<u8>)>) -> Result<(), HubError> {
        if matches!(table, pubsub::store::NODE_TABLE | pubsub::store::ITEM_TABLE) {
            return self.pubsub.restore(table, rows);
        }
        match table {
            muc::ROOM_TABLE => return self.restore_rooms(rows),
            mam::ARCHIVE_TABLE | mam::PREFS_TABLE => return self.restore_mam(table, rows),
            _ => {}
        }
        self.restore_table(table, rows)
    }

    /// Resource binding (RFC 6120 §7) after SASL. `resource: None` makes the
    /// server generate one. If the full JID is already bound by another
    /// session, the OLD session is replaced: `Output::Close{old, "conflict"}`
    /// plus its unbind effects, and the new one gets the JID. An invalid
    /// resource (resourceprep) or username is a `bad-request`; binding a
    /// session twice is `not-allowed`.
    pub fn bind(
        &mut self,
        session: SessionId,
        username: &str,
        resource: Option<&str>,
        out: &mut Vec<Output>,
    ) -> Result<FullJid, StanzaError> {
        self.bind_session(session, username, resource, out)
    }

    /// A top-level stanza (`<message/>`, `<presence/>`, `<iq/>` in
    /// `jabber:client`) from a bound session. The hub stamps `from` with the
    /// session's full JID (RFC 6120 §8.1.2.1) and routes or handles it.
    /// Stanzas of unbound sessions and other elements are ignored.
    pub fn handle_stanza(
        &mut self,
        session: SessionId,
        mut stanza: Element,
        accounts: &dyn Accounts,
        now_unix_ms: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(from) = self.sessions.get(&session).map(|s| s.jid.clone()) else {
            return;
        };
        if stanza.ns != ns::CLIENT {
            return;
        }
        stanza.set_attr("from", from.to_string());
        let to = match addressing::parse_to(&stanza) {
            Ok(to) => to,
            Err(()) => {
                if addressing::stanza_type(&stanza) != Some("error") {
                    let reply = StanzaError::jid_malformed().reply_to(&stanza);
                    out.push(Output::Deliver {
                        session,
                        stanza: reply,
                    });
                }
                return;
            }
        };
        if let Some(to) = &to
            && self.is_bridge_domain(to.domain().as_str())
        {
            if stanza.name != "presence" {
                out.push(Output::Bridge { session, stanza });
            }
            return;
        }
        if let Some(to) = &to
            && self.is_muc_domain(to.domain().as_str())
        {
            let cx = muc::MucCx {
                session,
                from,
                now: now_unix_ms,
                accounts,
            };
            self.muc_stanza(&cx, to.clone(), stanza, out);
            return;
        }
        let cx = Ctx {
            session,
            user: from.to_bare(),
            from,
            accounts,
            now: now_unix_ms,
        };
        if let Some(to) = &to
            && self.is_pubsub_service(to)
        {
            self.pubsub_component_stanza(&cx, stanza, out);
            return;
        }
        match stanza.name.as_str() {
            "message" => self.message_from_client(&cx, to, stanza, out),
            "presence" => self.presence_from_client(&cx, to, stanza, out),
            "iq" => self.iq_from_client(&cx, to, stanza, out),
            _ => {}
        }
    }

    /// The session is gone (clean close, dropped TCP after any
    /// stream-management grace, or replaced). Broadcasts unavailable presence
    /// if it had sent available presence, tells directed-presence targets,
    /// forgets the session. Idempotent. Call it before
    /// [`Hub::requeue_unacked`] so the requeued stanzas do not come back to
    /// the dead session.
    pub fn unbind(&mut self, session: SessionId, now_unix_ms: u64, out: &mut Vec<Output>) {
        let _ = now_unix_ms;
        self.unbind_session(session, out);
    }

    /// Stanzas a session never acknowledged (XEP-0198) when it ended for
    /// good: messages are re-routed as if newly sent to the session's bare JID
    /// (other resources or offline storage; no carbon copies, carbons
    /// themselves are dropped), iq get/set are answered with
    /// `<service-unavailable/>` to the sender, presence is dropped.
    pub fn requeue_unacked(
        &mut self,
        full_jid: &FullJid,
        stanzas: Vec<Element>,
        accounts: &dyn Accounts,
        now_unix_ms: u64,
        out: &mut Vec<Output>,
    ) {
        self.requeue(full_jid, stanzas, accounts, now_unix_ms, out);
    }

    /// An account was deleted: cancels its subscriptions with every contact
    /// (their rosters are updated and pushed), then forgets its roster,
    /// offline messages, vCard and blocklist (`Delete` outputs). Sessions of
    /// the account are left to the server to close.
    pub fn remove_account(&mut self, username: &str, out: &mut Vec<Output>) {
        self.forget_account(username, out);
    }

    /// A stanza from a bridge (its `from` a JID of one of the bridge
    /// domains) to a local user: messages are routed as any message from
    /// outside (available resources, else offline storage), IQs only to a
    /// bound full JID. Anything else, or for an unknown account, is dropped;
    /// returns whether it was delivered or stored.
    pub fn deliver_from_bridge(
        &mut self,
        stanza: Element,
        accounts: &dyn Accounts,
        now_unix_ms: u64,
        out: &mut Vec<Output>,
    ) -> bool {
        let from_bridge = stanza
            .attr("from")
            .and_then(|f| Jid::new(f).ok())
            .is_some_and(|f| self.is_bridge_domain(f.domain().as_str()));
        let Ok(Some(to)) = addressing::parse_to(&stanza) else {
            return false;
        };
        if !from_bridge {
            return false;
        }
        let (bare, full) = match self.classify(&to) {
            addressing::Dest::Local { bare, full } => (bare, full),
            _ => return false,
        };
        if !addressing::account_exists(accounts, &bare) {
            return false;
        }
        match stanza.name.as_str() {
            "message" => {
                let routing = message::Routing {
                    sender_session: None,
                    now: now_unix_ms,
                    carbons: false,
                };
                matches!(
                    self.route_message(&routing, &bare, full.as_ref(), stanza, out),
                    message::Routed::Delivered(_) | message::Routed::Stored
                )
            }
            "iq" => match full.as_ref().and_then(|f| self.by_jid.get(f).copied()) {
                Some(session) => {
                    out.push(Output::Deliver { session, stanza });
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn is_bridge_domain(&self, domain: &str) -> bool {
        self.config.bridge_domains.iter().any(|d| d == domain)
    }

    /// The full JID of a bound session, for the IO layer and tests.
    pub fn jid_of(&self, session: SessionId) -> Option<&FullJid> {
        self.sessions.get(&session).map(|s| &s.jid)
    }

    /// A fresh id for a server-initiated IQ (roster and blocklist pushes).
    fn push_id(&mut self) -> String {
        let id = format!("push{}", self.next_push_id);
        self.next_push_id += 1;
        id
    }
}

/// A domain nameprepped when it is valid, as given otherwise.
fn normalize_domain(domain: &str) -> String {
    match BareJid::new(domain) {
        Ok(jid) if jid.node().is_none() => jid.to_string(),
        _ => domain.to_string(),
    }
}
