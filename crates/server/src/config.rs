//! The broker's configuration: one TOML file in which every key has a default.
//!
//! Unknown keys and bad values are refused with an error that names the key,
//! so that a typo never silently falls back to a default.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where each protocol listens.
    pub listeners: Listeners,
    /// AMQP 0-9-1 negotiation limits.
    pub amqp: AmqpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Authentication policy.
    pub auth: AuthConfig,
    /// Data directory (the `--data-dir` flag overrides it).
    pub data_dir: Option<PathBuf>,
    /// Message store.
    pub store: StoreConfig,
    /// Flow control.
    pub flow: FlowConfig,
    /// XMPP service.
    pub xmpp: XmppConfig,
    /// TLS for every TLS listener.
    pub tls: TlsConfig,
    /// MQTT settings.
    pub mqtt: MqttConfig,
    /// Limits that protect the broker from too many or hostile clients.
    pub limits: LimitsConfig,
    /// CoAP settings (docs/coap.md).
    pub coap: CoapConfig,
    /// Kafka protocol settings (docs/streams.md).
    pub kafka: KafkaConfig,
    /// Clustering (docs/cluster.md); off unless `node_id` is set.
    pub cluster: ClusterConfig,
}

/// The Kafka listener: topics are stream queues of one vhost (docs/streams.md, "Kafka").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// The vhost whose streams Kafka topics are.
    pub vhost: String,
    /// Create a missing topic (one partition) when a client asks for its metadata or
    /// produces to it.
    pub auto_create_topics: bool,
    /// `host:port` clients are told to connect to (Metadata, FindCoordinator); empty: the
    /// listener's bound address.
    pub advertised_listener: String,
    /// The user a connection acts as until it authenticates with SASL; empty: SASL is
    /// required. Loopback-only users (guest) work only from loopback.
    pub anonymous_user: String,
    /// Largest request accepted, in bytes; also the bound on a decompressed record batch.
    pub max_request_size: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            vhost: "/".into(),
            auto_create_topics: true,
            advertised_listener: String::new(),
            anonymous_user: "guest".into(),
            max_request_size: 64 << 20,
        }
    }
}

/// CoAP (RFC 7252) over UDP and DTLS: resources under `/ps/<topic>` on
/// `amq.topic` (docs/coap.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// The vhost of requests whose user name has no `vhost:` prefix.
    pub vhost: String,
    /// Largest request or response body in bytes (after block-wise
    /// reassembly); larger ones get 4.13 with Size1.
    pub max_message_size: usize,
    /// Peers (client addresses) tracked at once; datagrams from new ones
    /// beyond it are ignored.
    pub max_peers: usize,
    /// Observations one peer may hold; beyond it a registration gets 5.03.
    pub max_observations_per_peer: usize,
    /// Datagrams per second one address may send on average; beyond its
    /// burst they are dropped. 0: no limit.
    pub rate: u32,
    /// Datagrams one address may send at once above the rate.
    pub burst: u32,
    /// Type of Observe notifications: `request` (the type of the
    /// registering GET), `con` or `non`.
    pub notification_type: NotificationType,
    /// Seconds without traffic after which a peer without observations is forgotten.
    pub peer_idle_timeout: u64,
    /// DTLS pre-shared keys: a file of `identity:key` lines (key in hex with
    /// a `0x` prefix, else the text itself). An identity logs in as the broker
    /// user of that name. Empty: no PSK, CoAPS with the `[tls]` certificate only.
    pub psk_file: String,
}

/// `[coap] notification_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    /// Confirmable for a confirmable registration, else non-confirmable.
    #[default]
    Request,
    /// Always confirmable.
    Con,
    /// Always non-confirmable.
    Non,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            vhost: "/".into(),
            max_message_size: 1024 * 1024,
            max_peers: 10_000,
            max_observations_per_peer: 64,
            rate: 1000,
            burst: 2000,
            notification_type: NotificationType::Request,
            peer_idle_timeout: 300,
            psk_file: String::new(),
        }
    }
}

/// Limits on connections and what one connection may cost, across protocols
/// (docs/security.md, "Limits").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections open at once over every protocol and listener; a
    /// connection accepted past it is refused the protocol's way. Unset: 100 000,
    /// or nine tenths of the process's open-file limit if that is lower. 0: no limit.
    pub max_connections: Option<usize>,
    /// Connections one user may have open at once (RabbitMQ's per-user
    /// `max-connections`); 0, the default, is no limit.
    pub max_connections_per_user: usize,
    /// Queues a virtual host may hold (RabbitMQ's per-vhost `max-queues`);
    /// 0, the default, is no limit.
    pub max_queues_per_vhost: usize,
    /// Bytes of output one connection may have waiting for a client that
    /// does not read before the broker stops adding to it.
    pub max_buffered_bytes: usize,
    /// Seconds an MQTT client has to send CONNECT.
    pub mqtt_connect_timeout: u64,
    /// Seconds an XMPP client has from connecting to a bound resource
    /// (stream negotiation, TLS, SASL and bind).
    pub xmpp_handshake_timeout: u64,
    /// Stanzas per second one XMPP connection may send on average; past its
    /// burst the broker stops reading from it. 0: no limit.
    pub xmpp_stanza_rate: u32,
    /// Stanzas an XMPP connection may send at once above the rate.
    pub xmpp_stanza_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: None,
            max_connections_per_user: 0,
            max_queues_per_vhost: 0,
            max_buffered_bytes: 16 * 1024 * 1024,
            mqtt_connect_timeout: 10,
            xmpp_handshake_timeout: 30,
            xmpp_stanza_rate: 1000,
            xmpp_stanza_burst: 2000,
        }
    }
}

/// The default connection limit when `max_connections` is unset.
const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

impl LimitsConfig {
    /// The connection limit in force (0 = none): `max_connections`, or its
    /// default of 100 000 capped at nine tenths of the open-file limit, so that
    /// a flood of connections leaves descriptors for the store and listeners.
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find(|l| l.starts_with("Max open files"))
                        .and_then(|l| l.split_whitespace().nth(3))
                        .and_then(|v| v.parse::<usize>().ok())
                });
            match files {
                Some(n) => DEFAULT_MAX_CONNECTIONS.min(n / 10 * 9).max(1),
                None => DEFAULT_MAX_CONNECTIONS,
            }
        })
    }
}

/// MQTT settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Longest keep alive a v5 client may ask for, in seconds (Mosquitto's
    /// `max_keepalive`): a longer or absent (0) one is answered with this
    /// value as Server Keep Alive in the CONNACK, and the server holds the
    /// client to it. 65535 leaves the client's choice alone.
    pub max_keep_alive: u16,
    /// A client on MQTTS with a verified certificate that sends no password
    /// logs in as the certificate's user (RabbitMQ's `mqtt.ssl_cert_login`).
    pub ssl_cert_login: bool,
    /// The vhost of clients whose username has no `vhost:` prefix
    /// (RabbitMQ's `mqtt.vhost`).
    pub vhost: String,
    /// The same for clients on the MQTTS listener and on WebSocket over
    /// HTTPS (RabbitMQ maps vhosts per port); unset means `vhost`.
    pub tls_vhost: Option<String>,
    /// Largest packet accepted, in bytes, fixed header included (MQTT 5
    /// Maximum Packet Size, advertised in the CONNACK): a larger one is
    /// refused from its length prefix, before it is read (v5: DISCONNECT
    /// 0x95 Packet too large).
    pub max_packet_size: u32,
    /// QoS 1 and 2 deliveries sent to one client and not yet acknowledged;
    /// the queue holds the rest (a v5 client's lower Receive Maximum wins).
    pub max_inflight: u16,
    /// Our MQTT 5 Receive Maximum: QoS 2 publishes a client may leave
    /// unreleased (PUBREL not sent yet); one more is DISCONNECT 0x93.
    pub receive_maximum: u16,
}

impl MqttConfig {
    /// The vhost of TLS clients without a `vhost:` prefix.
    pub fn tls_vhost(&self) -> &str {
        self.tls_vhost.as_deref().unwrap_or(&self.vhost)
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_keep_alive: u16::MAX,
            vhost: "/".into(),
            ssl_cert_login: false,
            tls_vhost: None,
            max_packet_size: 16 * 1024 * 1024,
            max_inflight: 64,
            receive_maximum: 1024,
        }
    }
}

/// The certificate the TLS listeners present (AMQPS, MQTTS, HTTPS, and XMPP
/// unless `[xmpp]` names its own) and how client certificates are checked
/// (RabbitMQ's `ssl_options` names). docs/security.md, "TLS".
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; empty uses a self-signed one generated at first
    /// start for the XMPP domain (`<data dir>/xmpp/<domain>.crt`).
    pub certificate: String,
    /// PEM private key matching `certificate`.
    pub key: String,
    /// PEM bundle of the certificate authorities client certificates must
    /// chain to (needed by `verify = "verify_peer"`).
    pub ca_certificate: String,
    /// Whether clients are asked for a certificate, checked against
    /// `ca_certificate`.
    pub verify: TlsVerify,
    /// With `verify_peer`: refuse a client that presents no certificate.
    pub fail_if_no_peer_cert: bool,
    /// Where SASL EXTERNAL takes the user name from in a client certificate
    /// (RabbitMQ's `ssl_cert_login_from`).
    pub peer_cert_login_from: CertLoginFrom,
}

/// `[tls] verify`: RabbitMQ's `verify_none` / `verify_peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsVerify {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is asked for and must chain to `ca_certificate`.
    VerifyPeer,
}

/// `[tls] peer_cert_login_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's common name (CN).
    #[default]
    CommonName,
    /// The first DNS or e-mail subject alternative name.
    SubjectAlternativeName,
}

/// The XMPP service: its domain, TLS and session policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XmppConfig {
    /// The domain served (the part after `@` in users' JIDs).
    pub domain: String,
    /// Whether clients must use TLS before authenticating; loopback clients
    /// are always allowed in the clear.
    pub require_tls: bool,
    /// PEM certificate chain; empty generates a self-signed one for `domain`
    /// in the data directory at first start.
    pub certificate: String,
    /// PEM private key matching `certificate`.
    pub key: String,
    /// In-band registration (XEP-0077): anyone may create an account.
    pub registration: bool,
    /// Seconds a session with stream management waits to be resumed after
    /// its connection drops (XEP-0198).
    pub resumption_timeout: u32,
    /// Offline messages kept per user (XEP-0160); beyond it senders get an error.
    pub max_offline_messages: usize,
    /// Largest stanza accepted, in bytes.
    pub max_stanza_size: usize,
    /// Deepest element nesting accepted, counted below the stream root (a
    /// stanza is at depth 1); deeper is `<policy-violation/>`.
    pub max_depth: usize,
    /// The bridge to AMQP and MQTT: `bridge.<domain>` for direct messages,
    /// `topics.<domain>` for pubsub over MQTT topics (docs/bridging.md).
    pub bridge: bool,
    /// The exchange whose routing keys are JIDs (messages to XMPP users).
    pub bridge_exchange: String,
    /// The vhost the domain belongs to: where the bridge routes and whose
    /// permissions it applies.
    pub vhost: String,
    /// The publish-subscribe service (XEP-0060); unset means
    /// `pubsub.<domain>`, an empty string disables it.
    pub pubsub_domain: Option<String>,
    /// HTTP File Upload (XEP-0363); unset means `upload.<domain>`, an empty
    /// string disables it. Files are served by the HTTP listener.
    pub upload_domain: Option<String>,
    /// Largest file accepted for upload, in bytes.
    pub upload_max_file_size: u64,
    /// Bytes of uploaded files one user may keep.
    pub upload_quota_per_user: u64,
    /// Base of upload URLs (e.g. `https://files.example.org`); empty derives
    /// `http://<HTTP listener's bound address>`.
    pub upload_url: String,
    /// Multi-User Chat (XEP-0045); unset means `conference.<domain>`, an
    /// empty string disables it.
    pub muc_domain: Option<String>,
    /// Messages kept in each message archive (XEP-0313: every account's
    /// one-to-one messages, every room's); the oldest go first, 0 disables
    /// archiving.
    pub mam_max_messages: usize,
    /// Federation (server-to-server, `[xmpp.s2s]`): docs/xmpp.md.
    pub s2s: S2sConfig,
}

impl XmppConfig {
    /// The MUC service's domain, if enabled.
    pub fn muc_jid(&self) -> Option<String> {
        match &self.muc_domain {
            None => Some(format!("conference.{}", self.domain)),
            Some(d) if d.is_empty() => None,
            Some(d) => Some(d.clone()),
        }
    }

    /// The pubsub component's domain, if enabled.
    pub fn pubsub_jid(&self) -> Option<String> {
        match &self.pubsub_domain {
            None => Some(format!("pubsub.{}", self.domain)),
            Some(d) if d.is_empty() => None,
            Some(d) => Some(d.clone()),
        }
    }

    /// The upload service's domain, if enabled.
    pub fn upload_jid(&self) -> Option<String> {
        match &self.upload_domain {
            None => Some(format!("upload.{}", self.domain)),
            Some(d) if d.is_empty() => None,
            Some(d) => Some(d.clone()),
        }
    }
}

/// Federation: `[xmpp.s2s]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2sConfig {
    /// Stanzas to other domains go to their servers; off, they are answered
    /// with `<remote-server-not-found/>`.
    pub enabled: bool,
    /// Where to find peers, before DNS: `{ "b.test" = "127.0.0.1:5269" }`.
    pub peers: std::collections::BTreeMap<String, String>,
    /// A file of more peers, `domain host:port` per line, read again at each
    /// connection attempt (so tests can add a peer whose port they learn later).
    pub peers_file: String,
    /// PEM bundle of the CAs peer certificates are checked against; empty:
    /// the system has none configured here, so only `insecure_domains` and
    /// dialback authenticate peers.
    pub ca_certificates: String,
    /// Domains whose self-signed (or otherwise unverifiable) certificates are
    /// accepted as valid for them, for test setups.
    pub insecure_domains: Vec<String>,
    /// Server Dialback (XEP-0220) when a certificate does not authenticate.
    pub dialback: bool,
    /// TLS on every server-to-server stream.
    pub require_encryption: bool,
    /// Seconds an unused stream stays open.
    pub idle_timeout: u64,
    /// Seconds to connect and authenticate before queued stanzas bounce
    /// with `<remote-server-timeout/>`.
    pub connect_timeout: u64,
    /// Stanzas queued per peer while its stream is set up.
    pub queue_limit: usize,
    /// Secret dialback keys are derived from; empty: random at each start.
    pub dialback_secret: String,
    /// The DNS server for SRV and A/AAAA lookups of peers, `ip:port`;
    /// empty: the system's (`/etc/resolv.conf`).
    pub resolver: String,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            peers: Default::default(),
            peers_file: String::new(),
            ca_certificates: String::new(),
            insecure_domains: Vec::new(),
            dialback: true,
            require_encryption: true,
            idle_timeout: 600,
            connect_timeout: 30,
            queue_limit: 1000,
            dialback_secret: String::new(),
            resolver: String::new(),
        }
    }
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            domain: "localhost".into(),
            require_tls: true,
            certificate: String::new(),
            key: String::new(),
            registration: false,
            resumption_timeout: 300,
            max_offline_messages: 1000,
            max_stanza_size: 262_144,
            max_depth: 32,
            bridge: true,
            bridge_exchange: "xmpp".into(),
            vhost: "/".into(),
            pubsub_domain: None,
            upload_domain: None,
            upload_max_file_size: 10 * 1024 * 1024,
            upload_quota_per_user: 100 * 1024 * 1024,
            upload_url: String::new(),
            muc_domain: None,
            mam_max_messages: 10_000,
            s2s: S2sConfig::default(),
        }
    }
}

/// Flow control: publishers are blocked while queues hold too much memory.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Bytes queues may hold in memory (bodies and bookkeeping) before publishing
    /// connections are blocked (connection.blocked); default 40% of RAM, as RabbitMQ's
    /// `vm_memory_high_watermark`.
    pub memory_high_watermark: Option<usize>,
}

impl FlowConfig {
    /// The watermark in bytes.
    pub fn watermark(&self) -> usize {
        self.memory_high_watermark.unwrap_or_else(|| {
            let total_kib = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemTotal:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<usize>().ok())
                })
                .unwrap_or(4 * 1024 * 1024);
            total_kib * 1024 / 10 * 4
        })
    }
}

/// Message store settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Bytes of message bodies queues keep in memory; above it, new messages
    /// stay on disk only and are read back when delivered.
    pub memory_budget: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memory_budget: 512 * 1024 * 1024,
        }
    }
}

/// Listener addresses; port 0 picks a free port (the chosen one is logged).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// AMQP 0-9-1 over TCP (RabbitMQ's default: 5672). Empty string disables it.
    pub amqp: String,
    /// MQTT over TCP (Mosquitto's default: 1883). Empty string disables it.
    pub mqtt: String,
    /// HTTP (RabbitMQ's management port, 15672): MQTT over WebSocket at `/mqtt`,
    /// XMPP over WebSocket at `/xmpp-websocket`. Empty string disables it.
    pub http: String,
    /// XMPP client streams with STARTTLS (5222). Empty string disables it.
    pub xmpp: String,
    /// XMPP client streams over direct TLS (XEP-0368, 5223). Empty string disables it.
    pub xmpps: String,
    /// XMPP server-to-server streams with STARTTLS (RFC 6120: 5269). Empty
    /// string disables inbound federation.
    pub xmpp_server: String,
    /// XMPP server-to-server direct TLS (XEP-0368: 5270). Empty disables it.
    pub xmpps_server: String,
    /// MQTT over TLS (8883, Mosquitto's). Empty string disables it.
    pub mqtts: String,
    /// AMQP 0-9-1 over TLS (RabbitMQ's default: 5671). Empty string disables it.
    pub amqps: String,
    /// HTTPS: the HTTP listener's routes over TLS (15671, RabbitMQ's
    /// management TLS port). Empty string disables it.
    pub https: String,
    /// CoAP over UDP (5683); off (empty) by default, `"127.0.0.1:5683"` turns it on.
    pub coap: String,
    /// CoAP over DTLS 1.2 (5684); off (empty) by default.
    pub coaps: String,
    /// The Kafka protocol (9092); off (empty) by default, `"127.0.0.1:9092"` turns it on.
    pub kafka: String,
    /// The Kafka protocol over TLS (9093); off (empty) by default.
    pub kafkas: String,
    /// The cluster listener (RabbitMQ's inter-node port, 25672). Used only when `[cluster]`
    /// is configured; empty then means `127.0.0.1:25672`.
    pub cluster: String,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            amqp: "127.0.0.1:5672".into(),
            mqtt: "127.0.0.1:1883".into(),
            http: "127.0.0.1:15672".into(),
            xmpp: "127.0.0.1:5222".into(),
            xmpps: "127.0.0.1:5223".into(),
            xmpp_server: "127.0.0.1:5269".into(),
            xmpps_server: "127.0.0.1:5270".into(),
            mqtts: "127.0.0.1:8883".into(),
            amqps: "127.0.0.1:5671".into(),
            https: "127.0.0.1:15671".into(),
            coap: String::new(),
            coaps: String::new(),
            kafka: String::new(),
            kafkas: String::new(),
            cluster: String::new(),
        }
    }
}

/// Clustering (docs/cluster.md). Nothing of it runs unless `node_id` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique in the cluster; setting it turns clustering on.
    pub node_id: Option<u64>,
    /// Peers to form or join a cluster with, as `"id@host:port"`; empty for the first node
    /// of a new cluster.
    pub seeds: Vec<String>,
    /// The shared cluster secret (RabbitMQ's Erlang cookie); never sent on the wire.
    pub secret: String,
    /// A file holding the secret instead (trailing whitespace ignored).
    pub secret_file: String,
    /// The address peers reach this node at; empty means the listener's bound address.
    pub advertise: String,
    /// How long a definition change waits for a quorum before it is refused, in ms.
    pub command_timeout_ms: u64,
    /// Raft heartbeat interval, in ms.
    pub heartbeat_ms: u64,
    /// Raft election timeout (lower bound; the upper is twice it), in ms.
    pub election_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            seeds: Vec::new(),
            secret: String::new(),
            secret_file: String::new(),
            advertise: String::new(),
            command_timeout_ms: 5000,
            heartbeat_ms: 250,
            election_timeout_ms: 1000,
        }
    }
}

impl ClusterConfig {
    /// The secret's bytes, from `secret` or `secret_file`.
    pub fn secret_bytes(&self) -> Result<Vec<u8>, std::io::Error> {
        if !self.secret_file.is_empty() {
            let text = std::fs::read_to_string(&self.secret_file)?;
            return Ok(text.trim_end().as_bytes().to_vec());
        }
        Ok(self.secret.as_bytes().to_vec())
    }

    fn validate(
        &self,
        bad: impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if self.node_id.is_none() {
            return Ok(());
        }
        if self.secret.is_empty() && self.secret_file.is_empty() {
            return Err(bad(
                "cluster.secret",
                "a clustered node needs `secret` or `secret_file`".into(),
            ));
        }
        for seed in &self.seeds {
            let ok = seed
                .split_once('@')
                .is_some_and(|(id, addr)| id.parse::<u64>().is_ok() && !addr.is_empty());
            if !ok {
                return Err(bad(
                    "cluster.seeds",
                    format!("`{seed}` is not id@host:port such as 1@127.0.0.1:25672"),
                ));
            }
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms {
            return Err(bad(
                "cluster.election_timeout_ms",
                "must be greater than heartbeat_ms, which must not be 0".into(),
            ));
        }
        Ok(())
    }
}

/// AMQP limits offered in connection.tune, RabbitMQ's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Heartbeat interval the server proposes, in seconds (0 disables).
    pub heartbeat: u16,
    /// Largest frame the server accepts, in bytes (at least 4096).
    pub frame_max: u32,
    /// Highest channel number a client may open.
    pub channel_max: u16,
    /// Largest message body accepted, in bytes.
    pub max_message_size: u64,
    /// Seconds a client has to finish the handshake.
    pub handshake_timeout: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout: 10,
        }
    }
}

/// Logging configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `tributary=debug`; `RUST_LOG` wins when set.
    pub level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON
    /// object per line, for log shippers).
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-01T10:00:00Z  INFO target: message key=value`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":…,…},"target":…}`.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Authentication policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Users that may only log in from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Whether to create `guest`/`guest` when the user database is first made.
    pub create_guest: bool,
    /// Milliseconds a failed login waits before it is refused (slows down
    /// password guessing without holding up other connections).
    pub failure_delay_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            loopback_users: vec!["guest".into()],
            create_guest: true,
            failure_delay_ms: 1000,
        }
    }
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message, which names the key and position.
        message: String,
    },
    /// A value of the right type that is out of range.
    #[error("invalid config file {path}: key `{key}`: {message}")]
    Value {
        /// File.
        path: PathBuf,
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates TOML text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, message: String| ConfigError::Value {
            path: path.to_owned(),
            key,
            message,
        };
        self.cluster.validate(bad)?;
        if !self.listeners.amqp.is_empty() && self.listeners.amqp.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "listeners.amqp",
                format!(
                    "`{}` is not an address such as 127.0.0.1:5672",
                    self.listeners.amqp
                ),
            ));
        }
        if !self.listeners.mqtt.is_empty() && self.listeners.mqtt.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "listeners.mqtt",
                format!(
                    "`{}` is not an address such as 127.0.0.1:1883",
                    self.listeners.mqtt
                ),
            ));
        }
        if !self.listeners.http.is_empty() && self.listeners.http.parse::<SocketAddr>().is_err() {
            return Err(bad(
                "listeners.http",
                format!(
                    "`{}` is not an address such as 127.0.0.1:15672",
                    self.listeners.http
                ),
            ));
        }
        for (key, value, example) in [
            ("listeners.xmpp", &self.listeners.xmpp, "127.0.0.1:5222"),
            ("listeners.xmpps", &self.listeners.xmpps, "127.0.0.1:5223"),
            (
                "listeners.xmpp_server",
                &self.listeners.xmpp_server,
                "127.0.0.1:5269",
            ),
            (
                "listeners.xmpps_server",
                &self.listeners.xmpps_server,
                "127.0.0.1:5270",
            ),
            ("listeners.mqtts", &self.listeners.mqtts, "127.0.0.1:8883"),
            ("listeners.amqps", &self.listeners.amqps, "127.0.0.1:5671"),
            ("listeners.https", &self.listeners.https, "127.0.0.1:15671"),
            ("listeners.coap", &self.listeners.coap, "127.0.0.1:5683"),
            ("listeners.coaps", &self.listeners.coaps, "127.0.0.1:5684"),
            ("listeners.kafka", &self.listeners.kafka, "127.0.0.1:9092"),
            ("listeners.kafkas", &self.listeners.kafkas, "127.0.0.1:9093"),
        ] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                return Err(bad(
                    key,
                    format!("`{value}` is not an address such as {example}"),
                ));
            }
        }
        if self.xmpp.domain.is_empty() || jid::BareJid::new(&self.xmpp.domain).is_err() {
            return Err(bad(
                "xmpp.domain",
                format!("`{}` is not a valid domain", self.xmpp.domain),
            ));
        }
        if let Some(muc) = self.xmpp.muc_jid()
            && (muc == self.xmpp.domain
                || !jid::BareJid::new(&muc).is_ok_and(|j| j.node().is_none()))
        {
            return Err(bad(
                "xmpp.muc_domain",
                format!("`{muc}` is not a valid domain apart from xmpp.domain"),
            ));
        }
        if self.xmpp.certificate.is_empty() != self.xmpp.key.is_empty() {
            return Err(bad(
                "xmpp.key",
                "set both xmpp.certificate and xmpp.key, or neither".into(),
            ));
        }
        if self.tls.certificate.is_empty() != self.tls.key.is_empty() {
            return Err(bad(
                "tls.key",
                "set both tls.certificate and tls.key, or neither".into(),
            ));
        }
        self.validate_tls(path)?;
        let mqtt = &self.mqtt;
        // The smallest: room for a CONNECT with a client id and a short topic's PUBLISH.
        if !(64..=268_435_455).contains(&mqtt.max_packet_size) {
            return Err(bad(
                "mqtt.max_packet_size",
                format!(
                    "{} is not between 64 bytes and 268435455 (MQTT's largest)",
                    mqtt.max_packet_size
                ),
            ));
        }
        for (key, value) in [
            ("mqtt.max_inflight", mqtt.max_inflight),
            ("mqtt.receive_maximum", mqtt.receive_maximum),
        ] {
            if value == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if !(1..=1000).contains(&self.xmpp.max_depth) {
            return Err(bad(
                "xmpp.max_depth",
                format!("{} is not between 1 and 1000", self.xmpp.max_depth),
            ));
        }
        if self.xmpp.max_stanza_size < 10_000 {
            return Err(bad(
                "xmpp.max_stanza_size",
                "must be at least 10000 bytes (RFC 6120 §13.12)".into(),
            ));
        }
        if self.amqp.frame_max < 4096 {
            return Err(bad(
                "amqp.frame_max",
                format!("{} is below the AMQP minimum of 4096", self.amqp.frame_max),
            ));
        }
        if self.amqp.channel_max == 0 {
            return Err(bad("amqp.channel_max", "must be at least 1".into()));
        }
        if self.amqp.max_message_size == 0 || self.amqp.max_message_size > 512 * 1024 * 1024 {
            return Err(bad(
                "amqp.max_message_size",
                "must be between 1 byte and 512 MiB".into(),
            ));
        }
        self.validate_limits(path)?;
        self.validate_coap(path)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(bad("log.level", e.to_string()));
        }
        Ok(())
    }

    fn validate_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, message: &str| ConfigError::Value {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let tls = &self.tls;
        if tls.verify == TlsVerify::VerifyPeer && tls.ca_certificate.is_empty() {
            return Err(bad(
                "tls.ca_certificate",
                "verify = \"verify_peer\" needs the CA bundle client certificates chain to",
            ));
        }
        if tls.fail_if_no_peer_cert && tls.verify != TlsVerify::VerifyPeer {
            return Err(bad(
                "tls.fail_if_no_peer_cert",
                "only applies with verify = \"verify_peer\"",
            ));
        }
        if self.auth.failure_delay_ms > 60_000 {
            return Err(bad(
                "auth.failure_delay_ms",
                "must be at most 60000 (one minute)",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, message: String| ConfigError::Value {
            path: path.to_owned(),
            key,
            message,
        };
        let l = &self.limits;
        if l.max_buffered_bytes < 65_536 {
            return Err(bad(
                "limits.max_buffered_bytes",
                format!(
                    "{} is below the minimum of 65536 bytes",
                    l.max_buffered_bytes
                ),
            ));
        }
        for (key, value) in [
            ("limits.mqtt_connect_timeout", l.mqtt_connect_timeout),
            ("limits.xmpp_handshake_timeout", l.xmpp_handshake_timeout),
            ("amqp.handshake_timeout", self.amqp.handshake_timeout),
        ] {
            if !(1..=86_400).contains(&value) {
                return Err(bad(
                    key,
                    format!("{value} is not between 1 and 86400 seconds"),
                ));
            }
        }
        if l.xmpp_stanza_rate > 0 && l.xmpp_stanza_burst == 0 {
            return Err(bad(
                "limits.xmpp_stanza_burst",
                "must be at least 1 while limits.xmpp_stanza_rate is set".into(),
            ));
        }
        Ok(())
    }

    fn validate_coap(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key, message: &str| ConfigError::Value {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        let c = &self.coap;
        if !(1024..=64 * 1024 * 1024).contains(&c.max_message_size) {
            return Err(bad(
                "coap.max_message_size",
                "must be between 1024 bytes and 64 MiB",
            ));
        }
        if c.max_peers == 0 {
            return Err(bad("coap.max_peers", "must be at least 1"));
        }
        if c.rate > 0 && c.burst == 0 {
            return Err(bad(
                "coap.burst",
                "must be at least 1 while coap.rate is set",
            ));
        }
        if !(1..=86_400).contains(&c.peer_idle_timeout) {
            return Err(bad(
                "coap.peer_idle_timeout",
                "must be between 1 and 86400 seconds",
            ));
        }
        Ok(())
    }

    /// The Kafka listener address, if enabled.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.listeners.kafka.parse().ok()
    }

    /// The Kafka-over-TLS listener address, if enabled.
    pub fn kafkas_addr(&self) -> Option<SocketAddr> {
        self.listeners.kafkas.parse().ok()
    }

    /// The CoAP (UDP) listener address, if enabled.
    pub fn coap_addr(&self) -> Option<SocketAddr> {
        self.listeners.coap.parse().ok()
    }

    /// The CoAP-over-DTLS listener address, if enabled.
    pub fn coaps_addr(&self) -> Option<SocketAddr> {
        self.listeners.coaps.parse().ok()
    }

    /// The HTTP listener address, if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.listeners.http.parse().ok()
    }

    /// The MQTT listener address, if enabled.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.listeners.mqtt.parse().ok()
    }

    /// The XMPP (STARTTLS) listener address, if enabled.
    pub fn xmpp_addr(&self) -> Option<SocketAddr> {
        self.listeners.xmpp.parse().ok()
    }

    /// The MQTT-over-TLS listener address, if enabled.
    pub fn mqtts_addr(&self) -> Option<SocketAddr> {
        self.listeners.mqtts.parse().ok()
    }

    /// The XMPP direct-TLS listener address, if enabled.
    pub fn xmpps_addr(&self) -> Option<SocketAddr> {
        self.listeners.xmpps.parse().ok()
    }

    /// The XMPP server-to-server listener address, if enabled.
    pub fn xmpp_server_addr(&self) -> Option<SocketAddr> {
        self.listeners.xmpp_server.parse().ok()
    }

    /// The XMPP server-to-server direct-TLS listener address, if enabled.
    pub fn xmpps_server_addr(&self) -> Option<SocketAddr> {
        self.listeners.xmpps_server.parse().ok()
    }

    /// The cluster listener address, when `[cluster]` is configured.
    pub fn cluster_addr(&self) -> Option<String> {
        self.cluster.node_id?;
        if self.listeners.cluster.is_empty() {
            Some("127.0.0.1:25672".into())
        } else {
            Some(self.listeners.cluster.clone())
        }
    }

    /// The AMQP listener address, if enabled.
    pub fn amqp_addr(&self) -> Option<SocketAddr> {
        self.listeners.amqp.parse().ok()
    }

    /// The AMQP-over-TLS listener address, if enabled.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.listeners.amqps.parse().ok()
    }

    /// The HTTPS listener address, if enabled.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners.https.parse().ok()
    }
}

/// The default data directory: `$TRIBUTARY_DATA_DIR`, else
/// `$XDG_DATA_HOME/tributary`, else `~/.local/share/tributary`, else `./tributary-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRIBUTARY_DATA_DIR") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("tributary");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/tributary");
    }
    PathBuf::from("tributary-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("t.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.listeners.amqp, "127.0.0.1:5672");
        assert_eq!(c.amqp.frame_max, 131_072);
        assert_eq!(c.auth.loopback_users, vec!["guest".to_string()]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[amqp]\nhartbeat = 3\n").unwrap_err().to_string();
        assert!(e.contains("hartbeat"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse("[amqp]\nframe_max = 100\n").unwrap_err().to_string();
        assert!(e.contains("amqp.frame_max"), "{e}");
        let e = parse("[listeners]\namqp = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners.amqp"), "{e}");
        let e = parse("[amqp]\nheartbeat = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("heartbeat"), "{e}");
    }

    #[test]
    fn tls_keys_have_defaults_and_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.listeners.amqps, "127.0.0.1:5671");
        assert_eq!(c.listeners.https, "127.0.0.1:15671");
        assert_eq!(c.tls.verify, TlsVerify::None);
        assert!(!c.tls.fail_if_no_peer_cert);
        assert_eq!(c.tls.peer_cert_login_from, CertLoginFrom::CommonName);
        assert!(!c.mqtt.ssl_cert_login);
        assert_eq!(c.auth.failure_delay_ms, 1000);
        let c = parse(
            "[tls]\nca_certificate = \"ca.pem\"\nverify = \"verify_peer\"\n\
             fail_if_no_peer_cert = true\npeer_cert_login_from = \"subject_alternative_name\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.verify, TlsVerify::VerifyPeer);
        assert_eq!(
            c.tls.peer_cert_login_from,
            CertLoginFrom::SubjectAlternativeName
        );
        let e = parse("[tls]\nverify = \"verify_peer\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.ca_certificate"), "{e}");
        let e = parse("[tls]\nfail_if_no_peer_cert = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.fail_if_no_peer_cert"), "{e}");
        let e = parse("[tls]\nverify = \"verify_all\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("verify"), "{e}");
        let e = parse("[listeners]\namqps = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners.amqps"), "{e}");
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.limits.max_connections_per_user, 0);
        assert_eq!(c.limits.max_buffered_bytes, 16 * 1024 * 1024);
        assert_eq!(c.limits.xmpp_handshake_timeout, 30);
        let n = c.limits.connection_limit();
        assert!((1..=100_000).contains(&n), "{n}");
        let c = parse("[limits]\nmax_connections = 0\n").unwrap();
        assert_eq!(c.limits.connection_limit(), 0);
        let c = parse("[limits]\nmax_connections = 200\nmqtt_connect_timeout = 2\n").unwrap();
        assert_eq!(c.limits.connection_limit(), 200);
        assert_eq!(c.limits.mqtt_connect_timeout, 2);
        let e = parse("[limits]\nmax_conections = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conections"), "{e}");
        let e = parse("[limits]\nmax_buffered_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_buffered_bytes"), "{e}");
        let e = parse("[limits]\nxmpp_handshake_timeout = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.xmpp_handshake_timeout"), "{e}");
        let e = parse("[limits]\nxmpp_stanza_burst = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.xmpp_stanza_burst"), "{e}");
        let e = parse("[limits]\nmax_connections = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn coap_is_off_by_default_and_checked() {
        let c = parse("").expect("defaults");
        assert_eq!(c.coap_addr(), None);
        assert_eq!(c.coaps_addr(), None);
        assert_eq!(c.coap.notification_type, NotificationType::Request);
        let c =
            parse("[listeners]\ncoap = \"127.0.0.1:5683\"\n[coap]\nnotification_type = \"non\"\n")
                .expect("on");
        assert_eq!(c.coap_addr().map(|a| a.port()), Some(5683));
        assert_eq!(c.coap.notification_type, NotificationType::Non);
        for (text, key) in [
            ("[listeners]\ncoap = \"x\"\n", "listeners.coap"),
            ("[coap]\nmax_message_size = 10\n", "coap.max_message_size"),
            ("[coap]\nmax_peers = 0\n", "coap.max_peers"),
            ("[coap]\nburst = 0\n", "coap.burst"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn mqtt_and_xmpp_limits_have_defaults_and_are_checked() {
        let c = parse("").unwrap();
        assert_eq!(c.mqtt.max_packet_size, 16 * 1024 * 1024);
        assert_eq!(c.mqtt.max_inflight, 64);
        assert_eq!(c.mqtt.receive_maximum, 1024);
        assert_eq!(c.mqtt.tls_vhost(), "/");
        assert_eq!(c.xmpp.max_depth, 32);
        let c = parse(
            "[mqtt]\nvhost = \"plain\"\nmax_packet_size = 1024\nmax_inflight = 2\n\
             receive_maximum = 10\n[xmpp]\nmax_depth = 8\n",
        )
        .unwrap();
        assert_eq!(c.mqtt.tls_vhost(), "plain", "tls_vhost follows vhost");
        let m = &c.mqtt;
        assert_eq!(
            (m.max_packet_size, m.max_inflight, m.receive_maximum),
            (1024, 2, 10)
        );
        assert_eq!(c.xmpp.max_depth, 8);
        let c = parse("[mqtt]\ntls_vhost = \"secure\"\n").unwrap();
        assert_eq!((c.mqtt.vhost.as_str(), c.mqtt.tls_vhost()), ("/", "secure"));
        for (text, key) in [
            ("[mqtt]\nmax_packet_size = 10\n", "mqtt.max_packet_size"),
            ("[mqtt]\nmax_packet_size = 300000000\n", "max_packet_size"),
            ("[mqtt]\nmax_inflight = 0\n", "mqtt.max_inflight"),
            ("[mqtt]\nreceive_maximum = 0\n", "mqtt.receive_maximum"),
            ("[mqtt]\nmax_inflight = 70000\n", "max_inflight"),
            ("[xmpp]\nmax_depth = 0\n", "xmpp.max_depth"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn muc_domain_and_archive_size() {
        let c = parse("").expect("defaults");
        assert_eq!(c.xmpp.muc_jid().as_deref(), Some("conference.localhost"));
        assert_eq!(c.xmpp.mam_max_messages, 10_000);
        let c = parse("[xmpp]\nmuc_domain = \"\"\nmam_max_messages = 0\n").expect("off");
        assert_eq!(c.xmpp.muc_jid(), None);
        let c = parse("[xmpp]\nmuc_domain = \"rooms.localhost\"\n").expect("custom");
        assert_eq!(c.xmpp.muc_jid().as_deref(), Some("rooms.localhost"));
        let e = parse("[xmpp]\nmuc_domain = \"a@b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("xmpp.muc_domain"), "{e}");
    }
}
