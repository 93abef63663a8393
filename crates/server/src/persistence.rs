//! The store crate plugged in behind the core's `Persistence` seam, and the
//! start-up recovery that rebuilds durable definitions and messages from it.

use anyhow::Context;
use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tributary_core::persist::{
    BindingDef, ExchangeDef, QueueDef, Stored, StoredAt, decode_message, encode_message,
};
use tributary_core::{Broker, Message, Persistence};
use tributary_store::{Location, Recovery, Store, StoreOptions};

const EXCHANGES: &str = "exchanges";
const QUEUES: &str = "queues";
const BINDINGS: &str = "bindings";
const DELAYED: &str = "delayed";
/// Vhost name → the incarnation id its stored definitions belong to.
const VHOSTS: &str = "vhosts";
const RETAINED: &str = "retained";

/// `Persistence` over the segment log and its metadata tables.
pub struct StorePersistence {
    store: Arc<Store>,
    next_queue_id: AtomicU64,
    /// Stream queues' logs (`<data>/streams/`).
    streams: Arc<crate::streams::Streams>,
}

fn table(kind: &str) -> &'static str {
    match kind {
        "exchange" => EXCHANGES,
        "queue" => QUEUES,
        "delayed" => DELAYED,
        "retained" => RETAINED,
        "vhost" => VHOSTS,
        crate::mqtt::stored::TABLE => crate::mqtt::stored::TABLE,
        _ => BINDINGS,
    }
}

impl Persistence for StorePersistence {
    fn next_msg_id(&self) -> u64 {
        self.store.next_msg_id()
    }

    fn next_queue_id(&self) -> u64 {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    fn publish(&self, msg_id: u64, queues: &[u64], message: &Message) -> Option<StoredAt> {
        let payload = encode_message(message);
        match self.store.try_append_publish(msg_id, queues, &payload) {
            Ok(l) => Some(to_core(l)),
            Err(e) => {
                tracing::error!(error = %e, msg_id, "cannot persist a message");
                None
            }
        }
    }

    fn read(&self, at: StoredAt) -> Option<Bytes> {
        let location = Location {
            segment: at.segment,
            offset: at.offset,
            len: at.len,
        };
        match self.store.read(location) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(error = %e, ?at, "cannot read a paged-out message back");
                None
            }
        }
    }

    fn ack(&self, queue: u64, msg_id: u64) {
        self.store.append_ack(queue, msg_id);
    }

    fn delivered(&self, queue: u64, msg_id: u64) {
        self.store.append_delivered(queue, msg_id);
    }

    fn when_durable(&self, done: Box<dyn FnOnce() + Send>) {
        // Covers the stream logs too: a publish routed to a stream is confirmed once
        // both the shared log and the streams are fsynced.
        let streams = self.streams.clone();
        self.store
            .on_durable(Box::new(move |_proof| streams.barrier(done)));
    }

    fn open_stream(
        &self,
        vhost: u64,
        queue: u64,
        settings: &tributary_core::stream::StreamSettings,
    ) -> Option<Arc<dyn tributary_core::stream::StreamLog>> {
        self.streams.open(vhost, queue, settings)
    }

    fn put_definition(&self, kind: &str, key: &str, value: &[u8]) {
        if let Err(e) = self.store.meta_put(table(kind), key, value) {
            tracing::error!(error = %e, kind, "cannot persist a definition");
        }
    }

    fn delete_definition(&self, kind: &str, key: &str) {
        if let Err(e) = self.store.meta_delete(table(kind), key) {
            tracing::error!(error = %e, kind, "cannot delete a stored definition");
        }
    }

    fn queue_deleted(&self, queue: u64) {
        self.store.append_queue_deleted(queue);
    }
}

/// Opens the store in `dir`, builds the broker on it and restores everything
/// durable: exchanges, queues, bindings, then each queue's messages in order.
///
/// `vhosts` are the virtual hosts the user database lists, with their
/// incarnation ids: they are created before the definitions are restored,
/// and definitions stored for any other vhost, or for an older incarnation
/// of the same name (deleted while the broker was down, perhaps created
/// again), are dropped with their messages.
pub fn open(
    dir: &Path,
    memory_budget: usize,
    vhosts: &[(String, u64)],
) -> anyhow::Result<(Arc<Broker>, Arc<Store>)> {
    // Payloads are read back one by one below, so recovery needs memory for the
    // index and the memory budget only, not for the whole log.
    let options = StoreOptions {
        load_payloads: false,
        ..StoreOptions::default()
    };
    let (store, recovery) = Store::open(dir, options)
        .with_context(|| format!("cannot open the message store in {}", dir.display()))?;
    report(&recovery);
    let queue_defs: Vec<QueueDef> = decode_all(&store, QUEUES, QueueDef::decode)?;
    // Above every id in use: queue definitions, delayed-message ids and
    // whatever the log still holds (scratch ids are dropped below).
    let delayed_ids: Vec<u64> = store
        .meta_list(DELAYED)
        .context("cannot read stored delayed ids")?
        .iter()
        .filter_map(|(_, v)| {
            <[u8; 8]>::try_from(v.as_slice())
                .ok()
                .map(u64::from_le_bytes)
        })
        .collect();
    let next_queue_id = queue_defs
        .iter()
        .map(|q| q.id)
        .chain(delayed_ids.iter().copied())
        .chain(recovery.queues.keys().copied())
        .max()
        .unwrap_or(0)
        + 1;
    let persistence = Arc::new(StorePersistence {
        store: store.clone(),
        next_queue_id: AtomicU64::new(next_queue_id),
        streams: Arc::new(crate::streams::Streams::new(dir.join("streams"), true)),
    });
    let broker = Broker::new(Some(persistence.clone()), memory_budget);
    let stored_ids: HashMap<String, u64> = store
        .meta_list(VHOSTS)
        .context("cannot read stored vhosts")?
        .into_iter()
        .filter_map(|(k, v)| Some((k, u64::from_le_bytes(v.as_slice().try_into().ok()?))))
        .collect();
    // The default vhost always exists; it is dropped here (and created again
    // below) only when it is an older incarnation.
    let mut later = Vec::new();
    for (name, id) in vhosts {
        if stored_ids.get(name).is_some_and(|stored| stored != id) {
            later.push((name, *id));
            if name == "/" {
                broker.delete_vhost(name);
            }
            continue;
        }
        broker.add_vhost(name).set_incarnation(*id);
    }
    if !vhosts.iter().any(|(n, _)| n == "/") {
        broker.delete_vhost("/");
    }
    let gone = |table: &str, vhost: &str, key: &str| {
        tracing::info!(table, vhost, "dropping a definition of a deleted vhost");
        if let Err(e) = store.meta_delete(table, key) {
            tracing::error!(error = %e, table, "cannot delete a stored definition");
        }
    };
    for def in decode_all(&store, EXCHANGES, ExchangeDef::decode)? {
        match broker.vhost(&def.vhost) {
            Some(v) => v.restore_exchange(def),
            None => gone(
                EXCHANGES,
                &def.vhost,
                &ExchangeDef::key(&def.vhost, &def.name),
            ),
        }
    }
    let Recovery { mut queues, .. } = recovery;
    let mut restored = 0usize;
    for def in queue_defs {
        let Some(v) = broker.vhost(&def.vhost) else {
            gone(QUEUES, &def.vhost, &QueueDef::key(&def.vhost, &def.name));
            continue;
        };
        let id = def.id;
        let queue = v.restore_queue(def);
        let messages = queues.remove(&id).unwrap_or_default();
        restored += messages.len();
        queue.restore(messages.into_iter().filter_map(|m| match decode_message(read_payload(&store, &m)) {
            Ok(message) => {
                let stored = stored_copy(id, &m);
                Some((Arc::new(message), stored, m.delivered))
            }
            Err(e) => {
                tracing::warn!(msg_id = m.msg_id, error = %e, "skipping an undecodable stored message");
                None
            }
        }));
    }
    for def in decode_all(&store, BINDINGS, BindingDef::decode)? {
        let Some(v) = broker.vhost(&def.vhost) else {
            gone(BINDINGS, &def.vhost, &def.key());
            continue;
        };
        if !v.restore_binding(def.clone()) {
            tracing::warn!(source = %def.source, destination = %def.destination, "dropping a stored binding whose ends are gone");
        }
    }
    for (vhost, id) in store
        .meta_list(DELAYED)
        .context("cannot read stored delayed ids")?
    {
        let (Some(v), Ok(bytes)) = (broker.vhost(&vhost), <[u8; 8]>::try_from(id.as_slice()))
        else {
            if broker.vhost(&vhost).is_none() {
                gone(DELAYED, &vhost, &vhost);
            }
            continue;
        };
        let id = u64::from_le_bytes(bytes);
        let held = queues.remove(&id).unwrap_or_default();
        let messages = held
            .into_iter()
            .filter_map(|m| {
                let stored = stored_copy(id, &m);
                decode_message(read_payload(&store, &m))
                    .ok()
                    .map(|msg| (Arc::new(msg), stored))
            })
            .collect::<Vec<_>>();
        tracing::info!(vhost = %vhost, delayed = messages.len(), "recovered delayed messages");
        v.restore_delayed(id, messages);
    }
    for orphan in queues.keys() {
        store.append_queue_deleted(*orphan);
    }
    persistence.streams.remove_orphans();
    for (name, id) in later {
        broker.add_vhost(name).set_incarnation(id);
    }
    for name in stored_ids.keys() {
        if !vhosts.iter().any(|(n, _)| n == name)
            && let Err(e) = store.meta_delete(VHOSTS, name)
        {
            tracing::error!(error = %e, "cannot delete a stored vhost");
        }
    }
    for (name, id) in vhosts {
        persistence.put_definition("vhost", name, &id.to_le_bytes());
    }
    tracing::info!(messages = restored, "recovered durable state");
    Ok((broker, store))
}

/// Waits until every stream's appends are durable (before a clean shutdown).
pub fn flush_streams(broker: &Broker) {
    if let Some(p) = broker.persistence() {
        let (tx, rx) = std::sync::mpsc::channel();
        p.when_durable(Box::new(move || {
            let _ = tx.send(());
        }));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }
}

/// The stored MQTT sessions' rows (expiry deadlines and QoS 2 state).
pub fn mqtt_sessions(store: &Store) -> Vec<(String, Vec<u8>)> {
    store
        .meta_list(crate::mqtt::stored::TABLE)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read stored MQTT sessions");
            Vec::new()
        })
}

/// MQTT retained messages kept in the store, by topic.
pub fn retained_messages(store: &Store) -> HashMap<String, Arc<Message>> {
    let rows = store.meta_list(RETAINED).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read stored retained messages");
        Vec::new()
    });
    rows.into_iter()
        .filter_map(|(topic, bytes)| {
            decode_message(Bytes::from(bytes))
                .map(|m| (topic, Arc::new(m)))
                .map_err(|e| tracing::warn!(error = %e, "skipping an undecodable retained message"))
                .ok()
        })
        .collect()
}

/// Where a recovered message lives, in the core's terms.
fn stored_copy(queue: u64, m: &tributary_store::RecoveredMessage) -> Stored {
    Stored {
        queue,
        msg_id: m.msg_id,
        at: Some(to_core(m.location)),
    }
}

fn to_core(l: Location) -> StoredAt {
    StoredAt {
        segment: l.segment,
        offset: l.offset,
        len: l.len,
    }
}

/// A recovered message's payload, read back from the log by its location.
fn read_payload(store: &Store, m: &tributary_store::RecoveredMessage) -> Bytes {
    if !m.payload.is_empty() {
        return m.payload.clone();
    }
    store.read(m.location).unwrap_or_else(|e| {
        tracing::warn!(msg_id = m.msg_id, error = %e, "cannot read a recovered message");
        Bytes::new()
    })
}

fn decode_all<T>(
    store: &Store,
    table: &str,
    decode: impl Fn(&[u8]) -> Result<T, tributary_core::persist::DecodeError>,
) -> anyhow::Result<Vec<T>> {
    let rows = store
        .meta_list(table)
        .with_context(|| format!("cannot read stored {table}"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, value)| match decode(&value) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(table, key = %key.replace('\u{0}', "/"), error = %e, "skipping an undecodable stored definition");
                None
            }
        })
        .collect())
}

fn report(recovery: &Recovery) {
    let r = &recovery.report;
    for d in &r.truncated {
        tracing::warn!(segment = d.segment, offset = d.offset, bytes = d.bytes, reason = %d.reason, "message store: truncated a torn tail (never confirmed)");
    }
    for d in &r.corrupt {
        tracing::warn!(segment = d.segment, offset = d.offset, bytes = d.bytes, reason = %d.reason, "message store: skipped a corrupt record");
    }
    for d in &r.scan_stopped {
        tracing::warn!(segment = d.segment, offset = d.offset, bytes = d.bytes, reason = %d.reason, "message store: a segment's scan stopped at a bad record");
    }
    tracing::info!(
        segments = r.segments,
        records = r.records,
        live_messages = r.live_messages,
        clean_shutdown = recovery.clean_shutdown,
        millis = r.duration.as_millis() as u64,
        "message store opened"
    );
}
