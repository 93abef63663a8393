//! openraft's storage: the log in the store's `meta.redb` (fsynced before openraft is told
//! an append is done) and the definitions state machine with its snapshot.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use tributary_store::Store;

use crate::TypeConfig;
use crate::defs::{Definitions, Outcome};

/// Node ids are the configured `[cluster] node_id`.
pub type NodeId = u64;
type SErr = StorageError<NodeId>;

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";
const SNAPSHOT: &str = "snapshot";

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, SErr> {
    postcard::to_stdvec(v).map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, SErr> {
    postcard::from_bytes(b).map_err(|e| StorageIOError::read(AnyError::new(&e)).into())
}

fn store_err(e: tributary_store::StoreError) -> SErr {
    StorageIOError::write(AnyError::new(&e)).into()
}

/// The Raft log of the metadata group in the store. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
}

impl LogStore {
    /// The log kept in `store`.
    pub fn new(store: Arc<Store>) -> Self {
        LogStore { store }
    }

    fn state<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SErr> {
        match self.store.raft_log().state(key).map_err(store_err)? {
            Some(b) => decode(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Whether this node has ever voted or logged anything (a member of some cluster).
    pub fn is_initialised(&self) -> Result<bool, SErr> {
        Ok(self.state::<Vote<NodeId>>(VOTE)?.is_some()
            || self.store.raft_log().last().map_err(store_err)?.is_some())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let rows = self.store.raft_log().entries(range).map_err(store_err)?;
        rows.iter().map(|(_, b)| decode(b)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.state(PURGED)?;
        let last = match self.store.raft_log().last().map_err(store_err)? {
            Some((_, b)) => Some(decode::<Entry<TypeConfig>>(&b)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        self.store
            .raft_log()
            .put_state(VOTE, &encode(vote)?)
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        self.state(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        self.store
            .raft_log()
            .put_state(COMMITTED, &encode(&committed)?)
            .map_err(store_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.state::<Option<LogId<NodeId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<Result<Vec<_>, SErr>>()?;
        // One redb transaction with Durability::Immediate: on disk when it returns.
        let result = self.store.raft_log().append(&rows);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(AnyError::new(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.store
            .raft_log()
            .truncate_from(log_id.index)
            .map_err(store_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.store
            .raft_log()
            .purge_upto(log_id.index, (PURGED, &encode(&Some(log_id))?))
            .map_err(store_err)
    }
}

/// Turns committed definition changes into changes of the local broker. Implemented by the
/// server; called from the state machine, in log order, on every node (the proposing one
/// included). Must not propose commands itself.
pub trait Applier: Send + Sync + 'static {
    /// A committed command was applied to the replicated state with `outcome`.
    fn apply(&self, command: &crate::Command, outcome: &Outcome);
    /// The whole state was replaced (a snapshot installed from the leader, or loaded at
    /// start): make the broker match `after`, knowing it matched `before`.
    fn reset(&self, before: &Definitions, after: &Definitions);
}

/// The state machine's data, shared with the cluster handle for status and reads.
#[derive(Default)]
pub struct Applied {
    /// The replicated definitions.
    pub defs: Definitions,
    /// Last applied log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, openraft::BasicNode>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

/// The definitions state machine: in memory, rebuilt at start from the last snapshot in the
/// store and then the committed log entries openraft replays.
#[derive(Clone)]
pub struct StateMachine {
    store: Arc<Store>,
    state: Arc<Mutex<Applied>>,
    applier: Arc<dyn Applier>,
}

impl StateMachine {
    /// Loads the last snapshot from the store and hands it to the applier.
    pub fn open(store: Arc<Store>, applier: Arc<dyn Applier>) -> Result<Self, SErr> {
        let mut applied = Applied::default();
        if let Some(bytes) = store.raft_log().state(SNAPSHOT).map_err(store_err)? {
            let snap: StoredSnapshot = decode(&bytes)?;
            applied.defs = Definitions::from_snapshot(&snap.data)
                .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
            applied.last_applied = snap.meta.last_log_id;
            applied.membership = snap.meta.last_membership.clone();
            applier.reset(&Definitions::default(), &applied.defs);
        }
        Ok(StateMachine {
            store,
            state: Arc::new(Mutex::new(applied)),
            applier,
        })
    }

    /// The shared state (for status and reads of the replicated definitions).
    pub fn shared(&self) -> Arc<Mutex<Applied>> {
        self.state.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (data, last, membership) = {
            let s = self.state.lock();
            let data = s
                .defs
                .to_snapshot()
                .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
            (data, s.last_applied, s.membership.clone())
        };
        let snapshot_id = match last {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".into(),
        };
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.store
            .raft_log()
            .put_state(SNAPSHOT, &encode(&stored)?)
            .map_err(store_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        SErr,
    > {
        let s = self.state.lock();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            let mut s = self.state.lock();
            s.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Outcome::Applied),
                EntryPayload::Normal(command) => {
                    let outcome = s.defs.apply(&command);
                    // The broker change happens under the lock, so that a reader of the
                    // shared state never sees a version the broker has not reached.
                    self.applier.apply(&command, &outcome);
                    out.push(outcome);
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Outcome::Applied);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let defs = Definitions::from_snapshot(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.store
            .raft_log()
            .put_state(SNAPSHOT, &encode(&stored)?)
            .map_err(store_err)?;
        let mut s = self.state.lock();
        let before = std::mem::replace(&mut s.defs, defs);
        self.applier.reset(&before, &s.defs);
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        match self.store.raft_log().state(SNAPSHOT).map_err(store_err)? {
            Some(bytes) => {
                let snap: StoredSnapshot = decode(&bytes)?;
                Ok(Some(Snapshot {
                    meta: snap.meta,
                    snapshot: Box::new(Cursor::new(snap.data)),
                }))
            }
            None => Ok(None),
        }
    }
}
