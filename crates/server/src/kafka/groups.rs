//! Consumer groups: the `tributary-kafka` coordinator behind one mutex, the waiting
//! JoinGroup/SyncGroup requests as oneshot channels, a ticker for session timeouts, and the
//! committed offsets, kept in memory and written to the store's `kafka_offsets` table (one
//! row per group, one fsynced transaction per OffsetCommit) before the commit is answered.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tributary_kafka::code;
use tributary_kafka::group::{Completion, Coordinator, Join};
use tributary_kafka::request::{
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest,
};
use tributary_kafka::response::{self, FetchedOffset, JoinGroupResponse};
use tributary_store::Store;

use super::Conn;
use crate::users::Access;

/// The metadata table of committed offsets.
const TABLE: &str = "kafka_offsets";
/// How often session timeouts and rebalance deadlines are checked.
const TICK: Duration = Duration::from_millis(100);

/// One group's committed offsets: `(topic, partition)` → `(offset, metadata)`.
type Offsets = BTreeMap<(String, i32), (i64, Option<String>)>;

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredOffsets {
    offsets: Vec<(String, i32, i64, Option<String>)>,
}

/// Every group of the broker.
pub struct Groups {
    coordinator: Mutex<Coordinator>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Completion>>>,
    next_waiter: AtomicU64,
    /// By `vhost\0group`.
    offsets: Mutex<HashMap<String, Offsets>>,
    store: Option<Arc<Store>>,
    started: std::time::Instant,
}

fn key(vhost: &str, group: &str) -> String {
    format!("{vhost}\0{group}")
}

impl Groups {
    /// Groups whose offsets live in `store` (loaded now).
    pub fn new(store: Option<Arc<Store>>) -> Arc<Groups> {
        let mut offsets = HashMap::new();
        if let Some(s) = &store {
            match s.meta_list(TABLE) {
                Ok(rows) => {
                    for (k, v) in rows {
                        match serde_json::from_slice::<StoredOffsets>(&v) {
                            Ok(stored) => {
                                let map: Offsets = stored
                                    .offsets
                                    .into_iter()
                                    .map(|(t, p, o, m)| ((t, p), (o, m)))
                                    .collect();
                                offsets.insert(k, map);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping undecodable Kafka offsets")
                            }
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot read Kafka committed offsets"),
            }
        }
        Arc::new(Groups {
            coordinator: Mutex::new(Coordinator::new()),
            waiters: Mutex::new(HashMap::new()),
            next_waiter: AtomicU64::new(1),
            offsets: Mutex::new(offsets),
            store,
            started: std::time::Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs session timeouts and rebalance deadlines until shutdown.
    pub async fn run_ticker(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let done = self.coordinator.lock().tick(self.now());
            self.complete(done);
        }
    }

    fn complete(&self, done: Vec<Completion>) {
        let mut waiters = self.waiters.lock();
        for c in done {
            let w = match &c {
                Completion::Join(w, _) | Completion::Sync(w, _, _) => *w,
            };
            if let Some(tx) = waiters.remove(&w) {
                let _ = tx.send(c);
            }
        }
    }

    /// Runs `f` with a new waiter token and waits for its completion (None at shutdown).
    async fn wait(
        &self,
        shutdown: &CancellationToken,
        f: impl FnOnce(&mut Coordinator, u64, u64) -> Vec<Completion>,
    ) -> Option<Completion> {
        let w = self.next_waiter.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(w, tx);
        let done = {
            let mut c = self.coordinator.lock();
            f(&mut c, self.now(), w)
        };
        self.complete(done);
        tokio::select! {
            r = rx => r.ok(),
            _ = shutdown.cancelled() => {
                self.waiters.lock().remove(&w);
                None
            }
        }
    }

    /// Drops a deleted topic's committed offsets.
    pub fn forget_topic(&self, vhost: &str, topic: &str) {
        let prefix = format!("{vhost}\0");
        let mut changed = Vec::new();
        {
            let mut all = self.offsets.lock();
            for (k, offsets) in all.iter_mut().filter(|(k, _)| k.starts_with(&prefix)) {
                let before = offsets.len();
                offsets.retain(|(t, _), _| t != topic);
                if offsets.len() != before {
                    changed.push((k.clone(), offsets.clone()));
                }
            }
        }
        for (k, offsets) in changed {
            self.persist(&k, &offsets);
        }
    }

    fn persist(&self, k: &str, offsets: &Offsets) {
        let Some(store) = &self.store else { return };
        let stored = StoredOffsets {
            offsets: offsets
                .iter()
                .map(|((t, p), (o, m))| (t.clone(), *p, *o, m.clone()))
                .collect(),
        };
        let result = match serde_json::to_vec(&stored) {
            Ok(bytes) if offsets.is_empty() => store.meta_delete(TABLE, k).map(|_| drop(bytes)),
            Ok(bytes) => store.meta_put(TABLE, k, &bytes),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode Kafka offsets");
                return;
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot store Kafka committed offsets");
        }
    }
}

impl Conn {
    fn group_key(&self, group: &str) -> String {
        key(self.vhost(), group)
    }

    pub(super) async fn join_group(&mut self, v: i16, r: JoinGroupRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let client_id = if self.client_id.is_empty() {
            "consumer".to_owned()
        } else {
            self.client_id.clone()
        };
        let groups = self.ctx.groups.clone();
        let done = groups
            .wait(&self.ctx.shutdown, |c, now, w| {
                c.join(
                    now,
                    if r.group_id.is_empty() { "" } else { &gk },
                    Join {
                        member_id: &r.member_id,
                        client_id: &client_id,
                        session_timeout_ms: r.session_timeout_ms.max(0) as u64,
                        rebalance_timeout_ms: r.rebalance_timeout_ms.max(0) as u64,
                        protocol_type: &r.protocol_type,
                        protocols: &r.protocols,
                    },
                    w,
                )
            })
            .await;
        let answer = match done {
            Some(Completion::Join(_, j)) => j,
            _ => JoinGroupResponse {
                error: code::COORDINATOR_NOT_AVAILABLE,
                generation_id: -1,
                ..Default::default()
            },
        };
        response::join_group(v, &answer, out);
    }

    pub(super) async fn sync_group(&mut self, v: i16, r: SyncGroupRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let done = self
            .ctx
            .groups
            .clone()
            .wait(&self.ctx.shutdown, |c, now, w| {
                c.sync(now, &gk, r.generation_id, &r.member_id, &r.assignments, w)
            })
            .await;
        let (error, assignment) = match done {
            Some(Completion::Sync(_, e, a)) => (e, a),
            _ => (code::COORDINATOR_NOT_AVAILABLE, Bytes::new()),
        };
        response::sync_group(v, error, &assignment, out);
    }

    pub(super) fn heartbeat(&mut self, v: i16, r: HeartbeatRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let groups = &self.ctx.groups;
        let error =
            groups
                .coordinator
                .lock()
                .heartbeat(groups.now(), &gk, r.generation_id, &r.member_id);
        response::heartbeat(v, error, out);
    }

    pub(super) fn leave_group(&mut self, v: i16, r: LeaveGroupRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let groups = &self.ctx.groups;
        let mut results = Vec::new();
        let mut done = Vec::new();
        {
            let mut c = groups.coordinator.lock();
            for m in &r.members {
                let (e, d) = c.leave(groups.now(), &gk, m);
                results.push((m.clone(), e));
                done.extend(d);
            }
        }
        groups.complete(done);
        let error = if v < 3 {
            results.first().map_or(code::NONE, |r| r.1)
        } else {
            code::NONE
        };
        response::leave_group(v, error, &results, out);
    }

    pub(super) fn offset_commit(&mut self, v: i16, r: OffsetCommitRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let groups = self.ctx.groups.clone();
        let check = groups
            .coordinator
            .lock()
            .check_commit(&gk, r.generation_id, &r.member_id);
        let vhost = self.ctx.broker.vhost(self.vhost());
        let mut results = Vec::with_capacity(r.topics.len());
        let mut changed = false;
        let mut offsets = groups.offsets.lock().get(&gk).cloned().unwrap_or_default();
        for (topic, parts) in r.topics {
            let found = vhost
                .as_ref()
                .and_then(|vh| super::topics::find(vh, &topic, self.conn_id));
            let answers = parts
                .into_iter()
                .map(|p| {
                    if check != code::NONE {
                        return (p.partition, check);
                    }
                    let Some(q) = found
                        .as_ref()
                        .and_then(|qs| usize::try_from(p.partition).ok().and_then(|i| qs.get(i)))
                    else {
                        return (p.partition, code::UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    if !self.may(Access::Read, q.name()) {
                        return (p.partition, code::TOPIC_AUTHORIZATION_FAILED);
                    }
                    offsets.insert((topic.clone(), p.partition), (p.offset, p.metadata));
                    changed = true;
                    (p.partition, code::NONE)
                })
                .collect();
            results.push((topic, answers));
        }
        if changed {
            // Durable (one fsynced redb transaction) before the commit is answered.
            groups.persist(&gk, &offsets);
            groups.offsets.lock().insert(gk, offsets);
        }
        response::offset_commit(v, &results, out);
    }

    pub(super) fn offset_fetch(&mut self, v: i16, r: OffsetFetchRequest, out: &mut BytesMut) {
        let gk = self.group_key(&r.group_id);
        let offsets = self
            .ctx
            .groups
            .offsets
            .lock()
            .get(&gk)
            .cloned()
            .unwrap_or_default();
        let topics: Vec<(String, Vec<FetchedOffset>)> = match r.topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps
                        .into_iter()
                        .map(|p| {
                            let (offset, metadata) =
                                offsets.get(&(t.clone(), p)).cloned().unwrap_or((-1, None));
                            FetchedOffset {
                                partition: p,
                                offset,
                                metadata,
                                error: code::NONE,
                            }
                        })
                        .collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
                for ((t, p), (o, m)) in offsets {
                    by_topic.entry(t).or_default().push(FetchedOffset {
                        partition: p,
                        offset: o,
                        metadata: m,
                        error: code::NONE,
                    });
                }
                by_topic.into_iter().collect()
            }
        };
        response::offset_fetch(v, code::NONE, &topics, out);
    }
}
