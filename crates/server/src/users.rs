//! The user database shared by every protocol.
//!
//! Users live in `users.json` in the data directory, with passwords hashed by
//! Argon2id (never stored in plain text). The broker re-reads the file when it
//! changes, so `tributary user add` takes effect on a running broker at once.
//! Successful checks are cached briefly, since one Argon2id check costs
//! milliseconds and some clients reconnect in tight loops.

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tributary_sasl::{ScramCredentials, ScramHash};

/// The user database file in the data directory.
pub const FILE_NAME: &str = "users.json";
const CACHE_TTL: Duration = Duration::from_secs(30);
/// How often [`UserDb::generation`] looks at the file's modification time.
const GENERATION_RECHECK_MS: u64 = 100;

/// One account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Management tags (administrator, monitoring, management, ...).
    #[serde(default)]
    pub tags: Vec<String>,
    /// SCRAM-SHA-1 keys (never the password), for XMPP and SASL clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha1: Option<StoredScram>,
    /// SCRAM-SHA-256 keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram_sha256: Option<StoredScram>,
    /// Permissions by virtual host, as RabbitMQ's `set_permissions`.
    #[serde(default)]
    pub permissions: BTreeMap<String, Permission>,
    /// Topic permissions by virtual host, as RabbitMQ's
    /// `set_topic_permissions`: routing-key patterns per topic exchange.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_permissions: BTreeMap<String, Vec<TopicPermission>>,
}

/// What routing keys a user may publish with and bind (MQTT: subscribe)
/// with on one topic exchange of a vhost. Patterns are regular expressions
/// over the AMQP routing key (MQTT topics are checked in that form, `/`
/// becoming `.`), with `{username}`, `{vhost}` and `{client_id}` (or
/// Mosquitto's `%u` and `%c`) replaced by the connection's values. An empty
/// pattern matches nothing. With no topic permission for an exchange,
/// every routing key is allowed, as in RabbitMQ.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicPermission {
    /// The topic exchange (MQTT uses `amq.topic`).
    pub exchange: String,
    /// Routing keys the user may publish with.
    pub write: String,
    /// Routing keys the user may bind or subscribe with.
    pub read: String,
}

/// The values substituted into topic permission patterns.
#[derive(Debug, Clone, Copy)]
pub struct TopicContext<'a> {
    /// The login name.
    pub username: &'a str,
    /// The vhost.
    pub vhost: &'a str,
    /// The MQTT client id ("" for AMQP).
    pub client_id: &'a str,
}

/// One virtual host as `users.json` records it (RabbitMQ keeps vhosts
/// with users and permissions, so do we: the CLI edits them all in one
/// file that the running broker watches).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VhostRecord {
    /// The vhost's name.
    pub name: String,
    /// Free text shown by listings.
    #[serde(default)]
    pub description: String,
    /// Free-form tags, as RabbitMQ's vhost tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Which incarnation of the name this is (creation time in
    /// nanoseconds; 0 for `/` and vhosts of older files): a vhost deleted
    /// and created again between two looks of the broker is still emptied.
    #[serde(default)]
    pub id: u64,
    /// RabbitMQ's vhost limits (`rabbitmqctl set_vhost_limits`).
    #[serde(default, skip_serializing_if = "VhostLimits::is_empty")]
    pub limits: VhostLimits,
}

/// Per-vhost limits, as RabbitMQ's `max-connections` and `max-queues`, and
/// `max-sessions` for MQTT sessions (connected or kept for a client that
/// will come back). None: no limit of the vhost's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct VhostLimits {
    /// Open connections of every protocol in the vhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Queues in the vhost (instead of `[limits] max_queues_per_vhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queues: Option<u64>,
    /// MQTT sessions in the vhost, connected or stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u64>,
}

impl VhostLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == VhostLimits::default()
    }

    /// Applies `rabbitmqctl set_vhost_limits` JSON (`{"max-connections":
    /// 10}`): the named limits are replaced, a negative value removes one.
    pub fn apply_json(&mut self, json: &str) -> Result<(), UserError> {
        let map: BTreeMap<String, i64> =
            serde_json::from_str(json).map_err(|e| UserError::BadLimits(e.to_string()))?;
        for (key, value) in map {
            let slot = match key.as_str() {
                "max-connections" => &mut self.max_connections,
                "max-queues" => &mut self.max_queues,
                "max-sessions" => &mut self.max_sessions,
                other => {
                    return Err(UserError::BadLimits(format!(
                        "unknown limit '{other}' (max-connections, max-queues, max-sessions)"
                    )));
                }
            };
            *slot = u64::try_from(value).ok();
        }
        Ok(())
    }
}

impl VhostRecord {
    /// A vhost with no description or tags.
    pub fn named(name: &str) -> Self {
        VhostRecord {
            name: name.into(),
            description: String::new(),
            tags: Vec::new(),
            id: 0,
            limits: VhostLimits::default(),
        }
    }
}

/// What a user may do in one virtual host: three regular expressions over
/// resource names (exchanges, queues), as RabbitMQ applies them. An empty
/// expression matches nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Permission {
    /// Declare and delete resources.
    pub configure: String,
    /// Publish to exchanges, bind queues (the destination).
    pub write: String,
    /// Consume and get from queues, bind from exchanges (the source).
    pub read: String,
}

impl Permission {
    /// Everything (`.*` three times), what `guest` gets on `/`.
    pub fn all() -> Self {
        Permission {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }
}

/// The kind of access an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Declare or delete.
    Configure,
    /// Publish or bind to.
    Write,
    /// Consume or bind from.
    Read,
}

impl Access {
    /// The word RabbitMQ uses in its refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// The virtual host every protocol uses until there are others.
pub const DEFAULT_VHOST: &str = "/";

/// SCRAM keys as stored in `users.json` (RFC 5802 §3), base64-encoded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredScram {
    /// Salt.
    pub salt: String,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: String,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: String,
}

impl StoredScram {
    fn from_credentials(c: &ScramCredentials) -> Self {
        StoredScram {
            salt: B64.encode(&c.salt),
            iterations: c.iterations,
            stored_key: B64.encode(&c.stored_key),
            server_key: B64.encode(&c.server_key),
        }
    }

    fn to_credentials(&self) -> Option<ScramCredentials> {
        Some(ScramCredentials {
            salt: B64.decode(&self.salt).ok()?,
            iterations: self.iterations,
            stored_key: B64.decode(&self.stored_key).ok()?,
            server_key: B64.decode(&self.server_key).ok()?,
        })
    }
}

/// A new account record: Argon2id for PLAIN, SCRAM keys for SCRAM.
fn new_user(name: &str, password: &str, tags: Vec<String>) -> Result<User, UserError> {
    let mut user = User {
        name: name.into(),
        password_hash: hash_password(password)?,
        tags,
        scram_sha1: None,
        scram_sha256: None,
        permissions: BTreeMap::new(),
        topic_permissions: BTreeMap::new(),
    };
    set_scram(&mut user, password)?;
    Ok(user)
}

fn set_scram(user: &mut User, password: &str) -> Result<(), UserError> {
    let scram = |hash| {
        ScramCredentials::generate(hash, password)
            .map(|c| StoredScram::from_credentials(&c))
            .map_err(|e| UserError::Hash(e.to_string()))
    };
    user.scram_sha1 = Some(scram(ScramHash::Sha1)?);
    user.scram_sha256 = Some(scram(ScramHash::Sha256)?);
    Ok(())
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct UserFile {
    format_version: u32,
    users: Vec<User>,
    #[serde(default)]
    vhosts: Vec<VhostRecord>,
}

/// Why a user operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Reading or writing the file failed.
    #[error("user database {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("user database {path} is corrupt: {message}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// `user add` for an existing name.
    #[error("user '{0}' already exists")]
    Exists(String),
    /// The named user does not exist.
    #[error("user '{0}' does not exist")]
    Missing(String),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// A permission is not a valid regular expression.
    #[error("invalid permission pattern: {0}")]
    BadPattern(String),
    /// `vhost add` for an existing vhost.
    #[error("vhost '{0}' already exists")]
    VhostExists(String),
    /// The named vhost does not exist.
    #[error("vhost '{0}' does not exist")]
    NoVhost(String),
    /// A vhost name that cannot be used.
    #[error("invalid vhost name '{0}'")]
    BadVhost(String),
    /// `set_limits` JSON that is not an object of known limits.
    /// A clustered node could not replicate the change (no quorum, or a concurrent edit).
    #[error("{0}")]
    Cluster(String),
    #[error("invalid vhost limits: {0}")]
    BadLimits(String),
}

/// Why a login was refused (the detail is logged, never sent to the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// A loopback-only user connected from elsewhere.
    #[error("user can only log in via localhost")]
    LoopbackOnly,
}

/// The live user database.
pub struct UserDb {
    path: PathBuf,
    loopback_users: Vec<String>,
    state: Mutex<Loaded>,
    /// Bumped each time `users.json` is (re)loaded.
    generation: AtomicU64,
    /// When [`UserDb::generation`] next looks at the file, in ms since `opened`.
    next_look_ms: AtomicU64,
    opened: Instant,
}

#[derive(Default)]
struct Loaded {
    /// The file's modification time and inode when it was read: every
    /// edit renames a new file into place, so the inode tells two edits
    /// apart even within one tick of a coarse filesystem clock.
    modified: Option<(SystemTime, u64)>,
    users: HashMap<String, User>,
    vhosts: Vec<VhostRecord>,
    verified: HashMap<(String, String), Instant>,
    /// Compiled permission patterns by their text (None: invalid, matches nothing).
    patterns: HashMap<String, Option<regex::Regex>>,
}

/// Replaces the variables of a topic permission pattern with the
/// connection's values, escaped so they match only themselves.
pub fn expand_topic_pattern(pattern: &str, context: &TopicContext<'_>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while !rest.is_empty() {
        let (value, len) = if rest.starts_with("{username}") {
            (Some(context.username), "{username}".len())
        } else if rest.starts_with("{vhost}") {
            (Some(context.vhost), "{vhost}".len())
        } else if rest.starts_with("{client_id}") {
            (Some(context.client_id), "{client_id}".len())
        } else if rest.starts_with("%u") {
            (Some(context.username), 2)
        } else if rest.starts_with("%c") {
            (Some(context.client_id), 2)
        } else {
            let ch = rest.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[..ch]);
            rest = &rest[ch..];
            continue;
        };
        if let Some(v) = value {
            out.push_str(&regex::escape(v));
        }
        rest = &rest[len..];
    }
    out
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> UserError + '_ {
    move |source| UserError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The named account, for an edit.
fn find_user<'a>(users: &'a mut [User], name: &str) -> Result<&'a mut User, UserError> {
    users
        .iter_mut()
        .find(|u| u.name == name)
        .ok_or_else(|| UserError::Missing(name.into()))
}

/// The named account, for an edit of its rights in `vhost`, which must exist.
fn user_in_vhost<'a>(
    file: &'a mut UserFile,
    name: &str,
    vhost: &str,
) -> Result<&'a mut User, UserError> {
    if !file.vhosts.iter().any(|v| v.name == vhost) {
        return Err(UserError::NoVhost(vhost.into()));
    }
    find_user(&mut file.users, name)
}

/// Hashes a password with Argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// The current `users.json` format: 2 added permissions, 3 the vhost list.
const FORMAT_VERSION: u32 = 3;

fn read_file(path: &Path) -> Result<UserFile, UserError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut file: UserFile =
                serde_json::from_slice(&bytes).map_err(|e| UserError::Corrupt {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
            if file.format_version < 2 {
                // Before permissions existed every user could do everything.
                for user in &mut file.users {
                    user.permissions
                        .insert(DEFAULT_VHOST.to_string(), Permission::all());
                }
            }
            if file.format_version < 3 {
                // Before the vhost list only `/` existed.
                file.vhosts = vec![VhostRecord::named(DEFAULT_VHOST)];
            }
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserFile::default()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn write_file(path: &Path, file: &UserFile) -> Result<(), UserError> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| UserError::Hash(e.to_string()))?;
    write_document(path, &bytes)
}

/// Replaces the user database file with `bytes` atomically (temp file, fsync, rename,
/// directory fsync); the cluster's applier writes the replicated document this way.
pub fn write_document(path: &Path, bytes: &[u8]) -> Result<(), UserError> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Edits the user file (the CLI's path; the broker picks changes up).
pub struct UserAdmin {
    path: PathBuf,
}

impl UserAdmin {
    /// Opens the database in `data_dir`, creating the directory if needed.
    pub fn open(data_dir: &Path) -> Result<Self, UserError> {
        std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        Ok(UserAdmin {
            path: data_dir.join(FILE_NAME),
        })
    }

    /// Creates the file with `guest`/`guest` if it does not exist yet.
    pub fn ensure_initialised(&self, create_guest: bool) -> Result<(), UserError> {
        if self.path.exists() {
            return Ok(());
        }
        let mut file = UserFile {
            format_version: FORMAT_VERSION,
            users: Vec::new(),
            vhosts: vec![VhostRecord::named(DEFAULT_VHOST)],
        };
        if create_guest {
            let mut guest = new_user("guest", "guest", vec!["administrator".into()])?;
            guest
                .permissions
                .insert(DEFAULT_VHOST.to_string(), Permission::all());
            file.users.push(guest);
        }
        write_file(&self.path, &file)
    }

    fn edit(
        &self,
        f: impl FnOnce(&mut Vec<User>) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.edit_file(|file| f(&mut file.users))
    }

    fn edit_file(
        &self,
        f: impl FnOnce(&mut UserFile) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        if crate::cluster::active().is_some() {
            return self.edit_replicated(f);
        }
        let mut file = read_file(&self.path)?;
        file.format_version = FORMAT_VERSION;
        f(&mut file)?;
        write_file(&self.path, &file)
    }

    /// In a cluster: the edit is made on the replicated document (or on this node's file
    /// before the first replicated change) and proposed as a whole; every node's applier
    /// then writes it (see `crate::cluster`).
    fn edit_replicated(
        &self,
        f: impl FnOnce(&mut UserFile) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        let (expected, mut file) = match crate::cluster::users_document() {
            Some((version, bytes)) => (
                version,
                serde_json::from_slice::<UserFile>(&bytes).map_err(|e| UserError::Corrupt {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?,
            ),
            None => (0, read_file(&self.path)?),
        };
        file.format_version = FORMAT_VERSION;
        f(&mut file)?;
        let document =
            serde_json::to_vec_pretty(&file).map_err(|e| UserError::Hash(e.to_string()))?;
        match crate::cluster::replicate(|| tributary_cluster::Command::PutUsers {
            expected,
            document,
        }) {
            Ok(tributary_cluster::Outcome::Applied) => Ok(()),
            Ok(tributary_cluster::Outcome::Conflict { .. }) => Err(UserError::Cluster(
                "the user database was changed on another node at the same time; retry".into(),
            )),
            Err(e) => Err(UserError::Cluster(e.to_string())),
        }
    }

    /// Creates a virtual host (`rabbitmqctl add_vhost`); the running
    /// broker creates it within a fraction of a second.
    pub fn add_vhost(&self, name: &str, description: &str) -> Result<(), UserError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(UserError::BadVhost(name.into()));
        }
        self.edit_file(|file| {
            if file.vhosts.iter().any(|v| v.name == name) {
                return Err(UserError::VhostExists(name.into()));
            }
            let mut record = VhostRecord::named(name);
            record.description = description.into();
            record.id = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .max(1);
            file.vhosts.push(record);
            Ok(())
        })
    }

    /// Deletes a virtual host and every user's permissions in it
    /// (`rabbitmqctl delete_vhost`); the running broker then deletes its
    /// queues, exchanges and messages and closes its connections.
    pub fn delete_vhost(&self, name: &str) -> Result<(), UserError> {
        self.edit_file(|file| {
            let before = file.vhosts.len();
            file.vhosts.retain(|v| v.name != name);
            if file.vhosts.len() == before {
                return Err(UserError::NoVhost(name.into()));
            }
            for user in &mut file.users {
                user.permissions.remove(name);
                user.topic_permissions.remove(name);
            }
            Ok(())
        })
    }

    /// Replaces a user's tags (`rabbitmqctl set_user_tags`).
    pub fn set_tags(&self, name: &str, tags: Vec<String>) -> Result<(), UserError> {
        self.edit(|users| {
            let user = find_user(users, name)?;
            user.tags = tags;
            Ok(())
        })
    }

    /// Sets a vhost's limits from `rabbitmqctl set_vhost_limits` JSON.
    pub fn set_vhost_limits(&self, vhost: &str, json: &str) -> Result<(), UserError> {
        let mut probe = VhostLimits::default();
        probe.apply_json(json)?;
        self.edit_vhost(vhost, |record| record.limits.apply_json(json))
    }

    /// Removes a vhost's limits.
    pub fn clear_vhost_limits(&self, vhost: &str) -> Result<(), UserError> {
        self.edit_vhost(vhost, |record| {
            record.limits = VhostLimits::default();
            Ok(())
        })
    }

    fn edit_vhost(
        &self,
        vhost: &str,
        f: impl FnOnce(&mut VhostRecord) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.edit_file(|file| {
            let record = file
                .vhosts
                .iter_mut()
                .find(|v| v.name == vhost)
                .ok_or_else(|| UserError::NoVhost(vhost.into()))?;
            f(record)
        })
    }

    /// Lists virtual hosts.
    pub fn list_vhosts(&self) -> Result<Vec<VhostRecord>, UserError> {
        Ok(read_file(&self.path)?.vhosts)
    }

    /// Sets a user's topic permissions for one exchange of a vhost
    /// (`rabbitmqctl set_topic_permissions`).
    pub fn set_topic_permissions(
        &self,
        name: &str,
        vhost: &str,
        permission: TopicPermission,
    ) -> Result<(), UserError> {
        for (what, re) in [("write", &permission.write), ("read", &permission.read)] {
            let probe = expand_topic_pattern(
                re,
                &TopicContext {
                    username: "u",
                    vhost: "v",
                    client_id: "c",
                },
            );
            if let Err(e) = regex::Regex::new(&probe) {
                return Err(UserError::BadPattern(format!("{what} `{re}`: {e}")));
            }
        }
        self.edit_file(|file| {
            let user = user_in_vhost(file, name, vhost)?;
            let list = user.topic_permissions.entry(vhost.to_string()).or_default();
            list.retain(|p| p.exchange != permission.exchange);
            list.push(permission);
            Ok(())
        })
    }

    /// Removes a user's topic permissions in a vhost: for one exchange, or
    /// all of them.
    pub fn clear_topic_permissions(
        &self,
        name: &str,
        vhost: &str,
        exchange: Option<&str>,
    ) -> Result<(), UserError> {
        self.edit(|users| {
            let user = find_user(users, name)?;
            match exchange {
                None => {
                    user.topic_permissions.remove(vhost);
                }
                Some(x) => {
                    if let Some(list) = user.topic_permissions.get_mut(vhost) {
                        list.retain(|p| p.exchange != x);
                        if list.is_empty() {
                            user.topic_permissions.remove(vhost);
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Adds a user.
    pub fn add(&self, name: &str, password: &str, tags: Vec<String>) -> Result<(), UserError> {
        let user = new_user(name, password, tags)?;
        self.edit(|users| {
            if users.iter().any(|u| u.name == name) {
                return Err(UserError::Exists(name.into()));
            }
            users.push(user);
            Ok(())
        })
    }

    /// Deletes a user.
    pub fn delete(&self, name: &str) -> Result<(), UserError> {
        self.edit(|users| {
            let before = users.len();
            users.retain(|u| u.name != name);
            if users.len() == before {
                return Err(UserError::Missing(name.into()));
            }
            Ok(())
        })
    }

    /// Changes a password.
    pub fn passwd(&self, name: &str, password: &str) -> Result<(), UserError> {
        let fresh = new_user(name, password, Vec::new())?;
        self.edit(|users| {
            let user = find_user(users, name)?;
            user.password_hash = fresh.password_hash;
            user.scram_sha1 = fresh.scram_sha1;
            user.scram_sha256 = fresh.scram_sha256;
            Ok(())
        })
    }

    /// Sets a user's permissions in a virtual host (`rabbitmqctl
    /// set_permissions`); each expression must be a valid regular expression.
    pub fn set_permissions(
        &self,
        name: &str,
        vhost: &str,
        permission: Permission,
    ) -> Result<(), UserError> {
        for (what, re) in [
            ("configure", &permission.configure),
            ("write", &permission.write),
            ("read", &permission.read),
        ] {
            if let Err(e) = regex::Regex::new(re) {
                return Err(UserError::BadPattern(format!("{what} `{re}`: {e}")));
            }
        }
        self.edit_file(|file| {
            let user = user_in_vhost(file, name, vhost)?;
            user.permissions.insert(vhost.to_string(), permission);
            Ok(())
        })
    }

    /// Removes a user's permissions in a virtual host.
    pub fn clear_permissions(&self, name: &str, vhost: &str) -> Result<(), UserError> {
        self.edit(|users| {
            let user = find_user(users, name)?;
            user.permissions.remove(vhost);
            Ok(())
        })
    }

    /// Lists users.
    pub fn list(&self) -> Result<Vec<User>, UserError> {
        Ok(read_file(&self.path)?.users)
    }

    /// Creates or updates a user from a stored hash (the management API's
    /// `password_hash`, definitions import): an Argon2id PHC string, or a
    /// [`RABBIT_SHA256`]/[`RABBIT_SHA512`]-prefixed RabbitMQ hash. The
    /// user's permissions are kept; SCRAM keys are added at its next PLAIN
    /// login.
    pub fn put_hashed(&self, name: &str, hash: &str, tags: Vec<String>) -> Result<(), UserError> {
        self.edit(|users| {
            if let Some(user) = users.iter_mut().find(|u| u.name == name) {
                if user.password_hash != hash {
                    user.password_hash = hash.to_string();
                    user.scram_sha1 = None;
                    user.scram_sha256 = None;
                }
                user.tags = tags;
                return Ok(());
            }
            users.push(User {
                name: name.into(),
                password_hash: hash.into(),
                tags,
                scram_sha1: None,
                scram_sha256: None,
                permissions: BTreeMap::new(),
                topic_permissions: BTreeMap::new(),
            });
            Ok(())
        })
    }
}

impl UserDb {
    /// Opens the broker's view of the database.
    pub fn open(data_dir: &Path, loopback_users: Vec<String>) -> Result<Self, UserError> {
        let db = UserDb {
            path: data_dir.join(FILE_NAME),
            loopback_users,
            state: Mutex::new(Loaded::default()),
            generation: AtomicU64::new(0),
            next_look_ms: AtomicU64::new(0),
            opened: Instant::now(),
        };
        db.reload_if_changed()?;
        Ok(db)
    }

    fn reload_if_changed(&self) -> Result<(), UserError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| Ok((m.modified()?, std::os::unix::fs::MetadataExt::ino(&m))))
            .ok();
        let mut st = self.state.lock();
        if modified.is_some() && st.modified == modified {
            return Ok(());
        }
        let file = read_file(&self.path)?;
        st.users = file
            .users
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        st.vhosts = file.vhosts;
        st.modified = modified;
        st.verified.clear();
        st.patterns.clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A number that changes whenever `users.json` is re-read, so a caller may
    /// keep the results of [`UserDb::check`] while it stays the same (the AMQP
    /// and MQTT publish paths do). Cheap: an atomic load, and at most every
    /// 100 ms one caller also looks at the file's modification time, so an
    /// edit is seen within that time even if nothing else reads the database.
    pub fn generation(&self) -> u64 {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_look_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_look_ms
                .compare_exchange(
                    next,
                    now.saturating_add(GENERATION_RECHECK_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
            && let Err(e) = self.reload_if_changed()
        {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        self.generation.load(Ordering::Acquire)
    }

    /// The virtual hosts `users.json` lists (the broker creates and deletes
    /// its vhosts to match).
    pub fn vhosts(&self) -> Vec<VhostRecord> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        self.state.lock().vhosts.clone()
    }

    /// The limits of `vhost` (none for an unknown vhost).
    pub fn vhost_limits(&self, vhost: &str) -> VhostLimits {
        self.vhosts()
            .into_iter()
            .find(|v| v.name == vhost)
            .map(|v| v.limits)
            .unwrap_or_default()
    }

    /// Whether `name` has any topic permission in `vhost`: when not, every
    /// routing key is allowed and the publish paths skip the per-message
    /// check (callers cache the answer per [`UserDb::generation`]).
    pub fn has_topic_permissions(&self, name: &str, vhost: &str) -> bool {
        self.state
            .lock()
            .users
            .get(name)
            .is_some_and(|u| u.topic_permissions.contains_key(vhost))
    }

    /// Whether `name` may publish (`Access::Write`) or bind and subscribe
    /// (`Access::Read`) with `routing_key` on the topic exchange `exchange`
    /// of `vhost`, by the user's topic permissions (true when none apply).
    pub fn check_topic(
        &self,
        name: &str,
        exchange: &str,
        access: Access,
        routing_key: &str,
        context: &TopicContext<'_>,
    ) -> bool {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        let mut st = self.state.lock();
        let Some(permission) = st
            .users
            .get(name)
            .and_then(|u| u.topic_permissions.get(context.vhost))
            .and_then(|list| list.iter().find(|p| p.exchange == exchange))
        else {
            return true;
        };
        let pattern = match access {
            Access::Write => &permission.write,
            Access::Read => &permission.read,
            Access::Configure => return true,
        };
        if pattern.is_empty() {
            return false;
        }
        let pattern = expand_topic_pattern(pattern, context);
        let compiled = st
            .patterns
            .entry(pattern.clone())
            .or_insert_with(|| regex::Regex::new(&pattern).ok());
        compiled.as_ref().is_some_and(|re| re.is_match(routing_key))
    }

    /// Whether `name` may use virtual host `vhost` at all (has permissions there).
    pub fn vhost_access(&self, name: &str, vhost: &str) -> bool {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        self.state
            .lock()
            .users
            .get(name)
            .is_some_and(|u| u.permissions.contains_key(vhost))
    }

    /// Whether `name` has `access` to the exchange or queue `resource` in
    /// `vhost`: the matching expression must match somewhere in the name
    /// (RabbitMQ's semantics; anchor with `^…$`), and an empty one never does.
    pub fn check(&self, name: &str, vhost: &str, access: Access, resource: &str) -> bool {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        let mut st = self.state.lock();
        let Some(permission) = st.users.get(name).and_then(|u| u.permissions.get(vhost)) else {
            return false;
        };
        let pattern = match access {
            Access::Configure => permission.configure.clone(),
            Access::Write => permission.write.clone(),
            Access::Read => permission.read.clone(),
        };
        if pattern.is_empty() {
            return false;
        }
        let compiled = st
            .patterns
            .entry(pattern.clone())
            .or_insert_with(|| regex::Regex::new(&pattern).ok());
        compiled.as_ref().is_some_and(|re| re.is_match(resource))
    }

    /// Checks a login; `peer` enforces loopback-only users.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<User, AuthError> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        let user = {
            let mut st = self.state.lock();
            let user = st
                .users
                .get(name)
                .cloned()
                .ok_or(AuthError::InvalidCredentials)?;
            let key = (name.to_string(), password.to_string());
            if st
                .verified
                .get(&key)
                .is_some_and(|t| t.elapsed() < CACHE_TTL)
            {
                return self.check_peer(user, peer);
            }
            st.verified.remove(&key);
            user
        };
        if !verify_password(&user.password_hash, password) {
            return Err(AuthError::InvalidCredentials);
        }
        let mut st = self.state.lock();
        if st.verified.len() > 10_000 {
            st.verified.clear();
        }
        st.verified
            .insert((name.to_string(), password.to_string()), Instant::now());
        drop(st);
        self.check_peer(user, peer)
    }

    /// Whether an account exists.
    pub fn exists(&self, name: &str) -> bool {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        self.state.lock().users.contains_key(name)
    }

    /// The stored SCRAM keys of an account, if it has them.
    pub fn scram_credentials(&self, name: &str, hash: ScramHash) -> Option<ScramCredentials> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(error = %e, "cannot reload the user database; using the last good copy");
        }
        let st = self.state.lock();
        let user = st.users.get(name)?;
        match hash {
            ScramHash::Sha1 => user.scram_sha1.as_ref(),
            ScramHash::Sha256 => user.scram_sha256.as_ref(),
        }?
        .to_credentials()
    }

    /// Adds SCRAM keys to an account created before they existed, after
    /// its password was verified by a PLAIN login.
    pub fn upgrade_scram(&self, name: &str, password: &str) -> Result<(), UserError> {
        let missing = self
            .state
            .lock()
            .users
            .get(name)
            .is_some_and(|u| u.scram_sha1.is_none() || u.scram_sha256.is_none());
        if !missing {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        UserAdmin::open(dir)?.edit(|users| {
            if let Some(user) = users.iter_mut().find(|u| u.name == name) {
                set_scram(user, password)?;
            }
            Ok(())
        })?;
        self.reload_if_changed()
    }

    /// Whether `name` may log in from `peer` (loopback-only users).
    pub fn may_connect_from(&self, name: &str, peer: IpAddr) -> bool {
        Self::is_loopback(peer) || !self.loopback_users.iter().any(|u| u == name)
    }

    /// Whether `peer` is on loopback.
    pub fn is_loopback(peer: IpAddr) -> bool {
        match peer {
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            IpAddr::V4(v4) => v4.is_loopback(),
        }
    }

    fn check_peer(&self, user: User, peer: IpAddr) -> Result<User, AuthError> {
        if !Self::is_loopback(peer) && self.loopback_users.contains(&user.name) {
            return Err(AuthError::LoopbackOnly);
        }
        Ok(user)
    }
}

/// Prefix of a stored RabbitMQ `rabbit_password_hashing_sha256` hash
/// (imported definitions): base64 of a 4-byte salt and SHA-256(salt ‖ password).
pub const RABBIT_SHA256: &str = "$rabbitmq-sha256$";
/// Prefix of a stored RabbitMQ `rabbit_password_hashing_sha512` hash.
pub const RABBIT_SHA512: &str = "$rabbitmq-sha512$";

/// Checks a password against a stored hash: Argon2id, or a hash imported
/// from RabbitMQ, verified RabbitMQ's way (the salt is the decoded hash's
/// first 4 bytes; the rest must equal the digest of salt ‖ password).
pub fn verify_password(stored: &str, password: &str) -> bool {
    use sha2::Digest;
    let rabbit = |b64: &str, digest: &dyn Fn(&[u8]) -> Vec<u8>| {
        let Ok(raw) = B64.decode(b64) else {
            return false;
        };
        if raw.len() <= 4 {
            return false;
        }
        let (salt, expected) = raw.split_at(4);
        let mut input = salt.to_vec();
        input.extend_from_slice(password.as_bytes());
        let got = digest(&input);
        got.len() == expected.len()
            && got
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    };
    if let Some(b64) = stored.strip_prefix(RABBIT_SHA256) {
        return rabbit(b64, &|d| sha2::Sha256::digest(d).to_vec());
    }
    if let Some(b64) = stored.strip_prefix(RABBIT_SHA512) {
        return rabbit(b64, &|d| sha2::Sha512::digest(d).to_vec());
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_sha256_hashes_verify() {
        // RabbitMQ's documented example: salt 908D C60A, password "test12".
        use sha2::Digest;
        let salt = [0x90u8, 0x8d, 0xc6, 0x0a];
        let mut input = salt.to_vec();
        input.extend_from_slice(b"test12");
        let mut raw = salt.to_vec();
        raw.extend_from_slice(&sha2::Sha256::digest(&input));
        let stored = format!("{RABBIT_SHA256}{}", B64.encode(&raw));
        assert!(verify_password(&stored, "test12"));
        assert!(!verify_password(&stored, "test13"));
        assert!(!verify_password("$rabbitmq-sha256$AAAA", "x"));
        assert!(verify_password(&hash_password("pw").unwrap(), "pw"));
    }

    #[test]
    fn guest_is_loopback_only_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let admin = UserAdmin::open(dir.path()).unwrap();
        admin.ensure_initialised(true).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("$argon2id$"));
        assert!(!text.contains("\"guest\"\n") && !text.contains(":\"guest\""));
        let db = UserDb::open(dir.path(), vec!["guest".into()]).unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(db.authenticate("guest", "guest", lo).is_ok());
        assert_eq!(
            db.authenticate("guest", "guest", remote),
            Err(AuthError::LoopbackOnly)
        );
        assert_eq!(
            db.authenticate("guest", "nope", lo),
            Err(AuthError::InvalidCredentials)
        );
        assert_eq!(
            db.authenticate("ghost", "guest", lo),
            Err(AuthError::InvalidCredentials)
        );
    }

    #[test]
    fn vhosts_are_listed_and_deleting_one_drops_its_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let admin = UserAdmin::open(dir.path()).unwrap();
        admin.ensure_initialised(true).unwrap();
        assert!(matches!(
            admin.set_permissions("guest", "t1", Permission::all()),
            Err(UserError::NoVhost(_))
        ));
        admin.add_vhost("t1", "tenant").unwrap();
        assert!(matches!(
            admin.add_vhost("t1", ""),
            Err(UserError::VhostExists(_))
        ));
        assert!(matches!(
            admin.add_vhost("", ""),
            Err(UserError::BadVhost(_))
        ));
        admin
            .set_permissions("guest", "t1", Permission::all())
            .unwrap();
        let db = UserDb::open(dir.path(), vec![]).unwrap();
        let names: Vec<String> = db.vhosts().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["/", "t1"]);
        assert!(db.vhost_access("guest", "t1"));
        let first = db.vhosts()[1].id;
        admin.delete_vhost("t1").unwrap();
        assert!(!db.vhost_access("guest", "t1"));
        assert_eq!(db.vhosts().len(), 1);
        admin.add_vhost("t1", "").unwrap();
        assert_ne!(db.vhosts()[1].id, first, "a new incarnation");
        assert!(matches!(
            admin.delete_vhost("nope"),
            Err(UserError::NoVhost(_))
        ));
    }

    #[test]
    fn topic_patterns_substitute_escaped_values() {
        let ctx = TopicContext {
            username: "a.b",
            vhost: "v",
            client_id: "c+1",
        };
        assert_eq!(
            expand_topic_pattern(r"^x\.%u\.{client_id}$|{vhost}|%c|{other}", &ctx),
            r"^x\.a\.b\.c\+1$|v|c\+1|{other}"
        );
        let dir = tempfile::tempdir().unwrap();
        let admin = UserAdmin::open(dir.path()).unwrap();
        admin.ensure_initialised(true).unwrap();
        let topic = |write: &str, read: &str| TopicPermission {
            exchange: "amq.topic".into(),
            write: write.into(),
            read: read.into(),
        };
        admin
            .set_topic_permissions("guest", "/", topic(r"^d\.%u\.", ""))
            .unwrap();
        assert!(matches!(
            admin.set_topic_permissions("guest", "/", topic("(", "")),
            Err(UserError::BadPattern(_))
        ));
        let db = UserDb::open(dir.path(), vec![]).unwrap();
        let ctx = TopicContext {
            username: "guest",
            vhost: "/",
            client_id: "c",
        };
        assert!(db.check_topic("guest", "amq.topic", Access::Write, "d.guest.t", &ctx));
        assert!(!db.check_topic("guest", "amq.topic", Access::Write, "d.bob.t", &ctx));
        assert!(!db.check_topic("guest", "amq.topic", Access::Read, "d.guest.t", &ctx));
        assert!(db.check_topic("guest", "other", Access::Write, "anything", &ctx));
        assert!(db.has_topic_permissions("guest", "/"));
        admin
            .clear_topic_permissions("guest", "/", Some("amq.topic"))
            .unwrap();
        assert!(db.check_topic("guest", "amq.topic", Access::Read, "x", &ctx));
        assert!(!db.has_topic_permissions("guest", "/"));
    }

    #[test]
    fn cli_edits_are_seen_by_a_running_db() {
        let dir = tempfile::tempdir().unwrap();
        let admin = UserAdmin::open(dir.path()).unwrap();
        admin.ensure_initialised(false).unwrap();
        let db = UserDb::open(dir.path(), vec![]).unwrap();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(db.authenticate("alice", "s3cret", peer).is_err());
        admin.add("alice", "s3cret", vec![]).unwrap();
        // Filesystems with coarse mtimes could hide the change; force a reload.
        db.state.lock().modified = None;
        assert!(db.authenticate("alice", "s3cret", peer).is_ok());
        assert!(matches!(
            admin.add("alice", "x", vec![]),
            Err(UserError::Exists(_))
        ));
        admin.passwd("alice", "other").unwrap();
        db.state.lock().modified = None;
        assert!(db.authenticate("alice", "s3cret", peer).is_err());
        admin.delete("alice").unwrap();
        assert!(matches!(admin.delete("alice"), Err(UserError::Missing(_))));
    }

    #[test]
    fn generation_moves_when_the_file_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let admin = UserAdmin::open(dir.path()).unwrap();
        admin.ensure_initialised(true).unwrap();
        let db = UserDb::open(dir.path(), vec![]).unwrap();
        let first = db.generation();
        assert_eq!(db.generation(), first);
        assert!(db.check("guest", DEFAULT_VHOST, Access::Write, "amq.topic"));
        admin
            .set_permissions(
                "guest",
                DEFAULT_VHOST,
                Permission {
                    configure: String::new(),
                    write: String::new(),
                    read: ".*".into(),
                },
            )
            .unwrap();
        // Filesystems with coarse mtimes could hide the change; force a reload.
        db.state.lock().modified = None;
        assert!(!db.check("guest", DEFAULT_VHOST, Access::Write, "amq.topic"));
        assert_ne!(db.generation(), first);
    }
}
