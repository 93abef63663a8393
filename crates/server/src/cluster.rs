//! Clustering in the server: starting the node, the definition log the AMQP session and the
//! user database call, and the applier that turns committed definitions into changes of the
//! local broker.
//!
//! Nothing here runs unless `[cluster]` is configured: [`replicate`] is a no-op without a
//! cluster, so single-node behaviour is unchanged.
//!
//! Declarations and bindings are made locally first and then replicated (undone if the
//! cluster refuses), so that every check of the local path (arguments, equivalence,
//! permissions, limits) runs before anything reaches the log; deletions are replicated first
//! and then made locally. Each node's applier makes the same change on its own broker,
//! idempotently (the proposing node finds the object already there, or already gone).

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use tributary_cluster::{Applier, Binding, Cluster, Command, Definitions, NodeConfig, Outcome};
use tributary_core::persist::{BindingDef, ExchangeDef, QueueDef};
use tributary_core::{Broker, CoreError, Exchange, Queue, Table, VHost};

use crate::config::ClusterConfig;

/// The connection id the applier declares with (no connection owns replicated objects).
const APPLIER_CONNECTION: u64 = 0;

static CLUSTER: OnceLock<Arc<Cluster>> = OnceLock::new();

/// The running cluster node, if `[cluster]` is configured.
pub fn active() -> Option<&'static Arc<Cluster>> {
    CLUSTER.get()
}

/// Proposes `command` through the metadata group and waits until it is applied here; a
/// no-op without a cluster. Without a quorum the error is RabbitMQ's (541 INTERNAL_ERROR,
/// "... because the metadata store operation timed out").
pub fn replicate(command: impl FnOnce() -> Command) -> Result<Outcome, CoreError> {
    let Some(cluster) = active() else {
        return Ok(Outcome::Applied);
    };
    let command = command();
    let what = command.describe();
    let vhost = command.vhost().map(str::to_string);
    cluster.propose_blocking(command).map_err(|e| {
        tracing::warn!(node = cluster.id(), error = %e, "cluster: definition change refused: {what}");
        let place = match vhost {
            Some(v) => format!(" in vhost '{v}'"),
            None => String::new(),
        };
        CoreError::Internal(format!(
            "Could not {what}{place} on node '{}' because {e}",
            cluster.id()
        ))
    })
}

/// Whether an exchange's definition is replicated: durable, not auto-delete, not the default
/// or an `amq.*` one.
fn replicated_exchange(x: &Exchange) -> bool {
    let o = x.options();
    o.durable && !o.auto_delete && !x.name().is_empty() && !x.name().starts_with("amq.")
}

/// Whether a queue's definition is replicated: durable, not exclusive, not auto-delete.
fn replicated_queue(q: &Queue) -> bool {
    let o = q.options();
    o.durable && !o.exclusive && !o.auto_delete
}

/// After a local exchange.declare that created `x`: replicate it, or undo it.
pub fn exchange_declared(vhost: &VHost, x: &Exchange, created: bool) -> Result<(), CoreError> {
    if active().is_none() || !created || !replicated_exchange(x) {
        return Ok(());
    }
    let def = ExchangeDef {
        vhost: vhost.name().to_string(),
        name: x.name().to_string(),
        options: x.options().clone(),
    };
    replicate(|| Command::DeclareExchange {
        vhost: def.vhost.clone(),
        name: def.name.clone(),
        def: def.encode(),
    })
    .inspect_err(|_| {
        let _ = vhost.delete_exchange(x.name(), false);
    })
    .map(drop)
}

/// Before a local exchange.delete: replicate the deletion (after the if-unused check).
pub fn deleting_exchange(vhost: &VHost, name: &str, if_unused: bool) -> Result<(), CoreError> {
    if active().is_none() {
        return Ok(());
    }
    let Ok(x) = vhost.exchange(name) else {
        return Ok(());
    };
    if !replicated_exchange(&x) {
        return Ok(());
    }
    if if_unused && x.has_bindings() {
        return Err(CoreError::PreconditionFailed(format!(
            "exchange '{name}' in vhost '{}' in use",
            vhost.name()
        )));
    }
    replicate(|| Command::DeleteExchange {
        vhost: vhost.name().to_string(),
        name: name.to_string(),
    })
    .map(drop)
}

/// After a local queue.declare that created `q`: replicate it, or undo it.
pub fn queue_declared(vhost: &VHost, q: &Arc<Queue>, created: bool) -> Result<(), CoreError> {
    let Some(cluster) = active() else {
        return Ok(());
    };
    if !created || !replicated_queue(q) {
        return Ok(());
    }
    let def = QueueDef {
        vhost: vhost.name().to_string(),
        name: q.name().to_string(),
        id: 0,
        options: q.options().clone(),
    };
    replicate(|| Command::DeclareQueue {
        vhost: def.vhost.clone(),
        name: def.name.clone(),
        def: def.encode(),
        node: cluster.id(),
    })
    .inspect_err(|_| {
        vhost.remove_queue(q);
    })
    .map(drop)
}

/// Before a local queue.delete: replicate the deletion (after its preconditions).
pub fn deleting_queue(
    vhost: &VHost,
    name: &str,
    if_unused: bool,
    if_empty: bool,
    conn: u64,
) -> Result<(), CoreError> {
    if active().is_none() {
        return Ok(());
    }
    let Ok(q) = vhost.queue(name, conn) else {
        return Ok(());
    };
    if !replicated_queue(&q) {
        return Ok(());
    }
    q.check_delete(if_unused, if_empty)?;
    replicate(|| Command::DeleteQueue {
        vhost: vhost.name().to_string(),
        name: name.to_string(),
    })
    .map(drop)
}

/// The replicated form of a binding, if both ends are replicated.
fn binding(
    vhost: &VHost,
    source: &str,
    to_exchange: bool,
    destination: &str,
    key: &str,
    arguments: &Table,
) -> Option<Binding> {
    let src = vhost.exchange(source).ok()?;
    if !replicated_exchange(&src) {
        return None;
    }
    let dest_ok = if to_exchange {
        vhost
            .exchange(destination)
            .is_ok_and(|d| replicated_exchange(&d))
    } else {
        vhost
            .queue(destination, APPLIER_CONNECTION)
            .is_ok_and(|q| replicated_queue(&q))
    };
    if !dest_ok {
        return None;
    }
    let def = BindingDef {
        vhost: vhost.name().to_string(),
        source: source.to_string(),
        to_exchange,
        destination: destination.to_string(),
        key: key.to_string(),
        arguments: arguments.clone(),
    };
    Some(Binding {
        vhost: def.vhost.clone(),
        source: def.source.clone(),
        to_exchange,
        destination: def.destination.clone(),
        key: def.key.clone(),
        def: def.encode(),
    })
}

/// After a local queue.bind / exchange.bind: replicate it, or undo it.
pub fn bound(
    vhost: &VHost,
    source: &str,
    to_exchange: bool,
    destination: &str,
    key: &str,
    arguments: &Table,
) -> Result<(), CoreError> {
    if active().is_none() {
        return Ok(());
    }
    let Some(b) = binding(vhost, source, to_exchange, destination, key, arguments) else {
        return Ok(());
    };
    replicate(|| Command::Bind(b)).map(drop).inspect_err(|_| {
        let _ = if to_exchange {
            vhost.unbind_exchange(destination, source, key, arguments.clone())
        } else {
            vhost.unbind_queue(
                destination,
                source,
                key,
                arguments.clone(),
                APPLIER_CONNECTION,
            )
        };
    })
}

/// Before a local queue.unbind / exchange.unbind: replicate it.
pub fn unbinding(
    vhost: &VHost,
    source: &str,
    to_exchange: bool,
    destination: &str,
    key: &str,
    arguments: &Table,
) -> Result<(), CoreError> {
    if active().is_none() {
        return Ok(());
    }
    let Some(b) = binding(vhost, source, to_exchange, destination, key, arguments) else {
        return Ok(());
    };
    replicate(|| Command::Unbind(b)).map(drop)
}

/// The replicated user database document and its version, if the cluster has one.
pub fn users_document() -> Option<(u64, Vec<u8>)> {
    let defs = active()?.definitions();
    defs.users.map(|u| (u.version, u.document))
}

/// Applies committed definitions to the local broker and `users.json`.
pub struct BrokerApplier {
    broker: Arc<Broker>,
    users_file: std::path::PathBuf,
}

impl BrokerApplier {
    /// The applier for `broker`, writing the user database in `data_dir`.
    pub fn new(broker: Arc<Broker>, data_dir: &Path) -> Self {
        BrokerApplier {
            broker,
            users_file: data_dir.join(crate::users::FILE_NAME),
        }
    }

    fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        let v = self.broker.vhost(name);
        if v.is_none() {
            tracing::debug!(
                vhost = name,
                "cluster: definition for a vhost this node lacks"
            );
        }
        v
    }

    fn declare_exchange(&self, vhost: &str, def: &[u8]) {
        let Ok(def) = ExchangeDef::decode(def) else {
            tracing::warn!("cluster: undecodable exchange definition");
            return;
        };
        let Some(v) = self.vhost(vhost) else { return };
        let options = def.options.clone();
        if let Err(e) = v.declare_exchange(&def.name, options.type_name(), false, |_| options) {
            tracing::warn!(exchange = def.name, error = %e, "cluster: cannot apply exchange");
        }
    }

    fn declare_queue(&self, vhost: &str, def: &[u8]) {
        let Ok(def) = QueueDef::decode(def) else {
            tracing::warn!("cluster: undecodable queue definition");
            return;
        };
        let Some(v) = self.vhost(vhost) else { return };
        if let Err(e) = v.declare_queue(&def.name, false, def.options, APPLIER_CONNECTION) {
            tracing::warn!(queue = def.name, error = %e, "cluster: cannot apply queue");
        }
    }

    fn bind(&self, b: &Binding, add: bool) {
        let Ok(def) = BindingDef::decode(&b.def) else {
            tracing::warn!("cluster: undecodable binding definition");
            return;
        };
        let Some(v) = self.vhost(&b.vhost) else {
            return;
        };
        let r = match (add, def.to_exchange) {
            (true, true) => v.bind_exchange(&def.destination, &def.source, &def.key, def.arguments),
            (true, false) => v.bind_queue(
                &def.destination,
                &def.source,
                &def.key,
                def.arguments,
                APPLIER_CONNECTION,
            ),
            (false, true) => {
                v.unbind_exchange(&def.destination, &def.source, &def.key, def.arguments)
            }
            (false, false) => v.unbind_queue(
                &def.destination,
                &def.source,
                &def.key,
                def.arguments,
                APPLIER_CONNECTION,
            ),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "cluster: binding change not applied");
        }
    }

    fn write_users(&self, document: &[u8]) {
        if let Err(e) = crate::users::write_document(&self.users_file, document) {
            tracing::error!(error = %e, "cluster: cannot write the replicated user database");
        }
    }
}

impl Applier for BrokerApplier {
    fn apply(&self, command: &Command, outcome: &Outcome) {
        if *outcome != Outcome::Applied {
            return;
        }
        match command {
            Command::DeclareExchange { vhost, def, .. } => self.declare_exchange(vhost, def),
            Command::DeleteExchange { vhost, name } => {
                if let Some(v) = self.vhost(vhost)
                    && let Err(e) = v.delete_exchange(name, false)
                {
                    tracing::debug!(error = %e, "cluster: exchange delete not applied");
                }
            }
            Command::DeclareQueue { vhost, def, .. } => self.declare_queue(vhost, def),
            Command::DeleteQueue { vhost, name } => {
                if let Some(v) = self.vhost(vhost)
                    && let Err(e) = v.delete_queue(name, false, false, APPLIER_CONNECTION)
                {
                    tracing::debug!(error = %e, "cluster: queue delete not applied");
                }
            }
            Command::Bind(b) => self.bind(b, true),
            Command::Unbind(b) => self.bind(b, false),
            Command::PutUsers { document, .. } => self.write_users(document),
        }
    }

    fn reset(&self, before: &Definitions, after: &Definitions) {
        for b in before.bindings.difference(&after.bindings) {
            self.bind(b, false);
        }
        for (vhost, name) in before
            .queues
            .keys()
            .filter(|k| !after.queues.contains_key(*k))
        {
            if let Some(v) = self.vhost(vhost) {
                let _ = v.delete_queue(name, false, false, APPLIER_CONNECTION);
            }
        }
        for (vhost, name) in before
            .exchanges
            .keys()
            .filter(|k| !after.exchanges.contains_key(*k))
        {
            if let Some(v) = self.vhost(vhost) {
                let _ = v.delete_exchange(name, false);
            }
        }
        if let Some(u) = &after.users
            && before.users.as_ref() != Some(u)
        {
            self.write_users(&u.document);
        }
        for ((vhost, _), def) in &after.exchanges {
            self.declare_exchange(vhost, def);
        }
        for ((vhost, _), q) in &after.queues {
            self.declare_queue(vhost, &q.def);
        }
        for b in &after.bindings {
            self.bind(b, true);
        }
    }
}

/// Parses `id@host:port`.
fn parse_seed(s: &str) -> anyhow::Result<(u64, String)> {
    let (id, addr) = s
        .split_once('@')
        .with_context(|| format!("cluster seed `{s}` is not id@host:port"))?;
    let id = id
        .parse()
        .with_context(|| format!("cluster seed `{s}`: `{id}` is not a node id"))?;
    Ok((id, addr.to_string()))
}

/// Starts the cluster node if `[cluster]` is configured; returns the bound listener address.
pub async fn start(
    config: &ClusterConfig,
    listen: &str,
    broker: Arc<Broker>,
    store: Arc<tributary_store::Store>,
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<Cluster>>> {
    let Some(node_id) = config.node_id else {
        return Ok(None);
    };
    let secret = config.secret_bytes()?;
    let seeds = config
        .seeds
        .iter()
        .map(|s| parse_seed(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen for the cluster on {listen} (listeners.cluster)")
        })?;
    let local = listener.local_addr()?;
    tracing::info!("listening protocol=cluster addr={local}");
    let advertise = if config.advertise.is_empty() {
        local.to_string()
    } else {
        config.advertise.clone()
    };
    let node = NodeConfig {
        node_id,
        advertise,
        seeds,
        secret,
        tls: None,
        command_timeout: Duration::from_millis(config.command_timeout_ms),
        heartbeat: Duration::from_millis(config.heartbeat_ms),
        election_timeout: Duration::from_millis(config.election_timeout_ms),
    };
    let applier = Arc::new(BrokerApplier::new(broker, data_dir));
    let cluster = Cluster::start(node, listener, store, applier).await?;
    let _ = CLUSTER.set(cluster.clone());
    tracing::info!(node = node_id, "cluster node started");
    Ok(Some(cluster))
}
