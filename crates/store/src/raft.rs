//! A Raft log and its small state (vote, committed index, snapshot) in `meta.redb`.
//!
//! Two tables: `raft_log` (`u64` index → the engine's serialized entry) and `raft_state`
//! (`&str` → bytes). Every write is one redb transaction committed with
//! `Durability::Immediate`, so it is fsynced before the call returns: the cluster crate
//! acknowledges an append to openraft only after that.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::StoreError;
use crate::meta::{Meta, meta_err};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_state");

impl Meta {
    pub(crate) fn raft_append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(meta_err)?;
            for (index, bytes) in entries {
                t.insert(*index, bytes.as_slice()).map_err(meta_err)?;
            }
        }
        tx.commit().map_err(meta_err)
    }

    /// Removes the entries with an index in `range`, and optionally writes one state row in
    /// the same transaction (the purge records how far it went).
    pub(crate) fn raft_remove(
        &self,
        range: impl std::ops::RangeBounds<u64>,
        state: Option<(&str, &[u8])>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        {
            let mut t = tx.open_table(LOG).map_err(meta_err)?;
            t.retain_in(range, |_, _| false).map_err(meta_err)?;
            if let Some((key, value)) = state {
                let mut s = tx.open_table(STATE).map_err(meta_err)?;
                s.insert(key, value).map_err(meta_err)?;
            }
        }
        tx.commit().map_err(meta_err)
    }

    pub(crate) fn raft_entries(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db().begin_read().map_err(meta_err)?;
        let t = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(meta_err(e)),
        };
        let mut out = Vec::new();
        for row in t.range(range).map_err(meta_err)? {
            let (k, v) = row.map_err(meta_err)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub(crate) fn raft_last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let tx = self.db().begin_read().map_err(meta_err)?;
        let t = match tx.open_table(LOG) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(meta_err(e)),
        };
        let last = t.last().map_err(meta_err)?;
        Ok(last.map(|(k, v)| (k.value(), v.value().to_vec())))
    }

    pub(crate) fn raft_state_put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.db().begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        {
            let mut t = tx.open_table(STATE).map_err(meta_err)?;
            t.insert(key, value).map_err(meta_err)?;
        }
        tx.commit().map_err(meta_err)
    }

    pub(crate) fn raft_state_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db().begin_read().map_err(meta_err)?;
        let t = match tx.open_table(STATE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(meta_err(e)),
        };
        let v = t.get(key).map_err(meta_err)?;
        Ok(v.map(|v| v.value().to_vec()))
    }
}

/// The Raft log of one group, kept in the store's `meta.redb` (see `FORMAT.md`, "Raft log").
///
/// Indexes are openraft's log indexes; payloads are opaque to the store. Every write is
/// fsynced before it returns.
pub struct RaftLog<'a> {
    pub(crate) store: &'a crate::Store,
}

impl RaftLog<'_> {
    fn with<T>(&self, f: impl FnOnce(&Meta) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let guard = self.store.meta.read();
        f(guard.as_ref().ok_or(StoreError::Closed)?)
    }

    /// Writes `entries` (index, bytes), replacing any with the same index, in one fsynced
    /// transaction.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.with(|m| m.raft_append(entries))
    }

    /// Deletes every entry from `index` on (a conflicting suffix).
    pub fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        self.with(|m| m.raft_remove(index.., None))
    }

    /// Deletes every entry up to and including `index` and records `state` (key, value) in
    /// the same transaction.
    pub fn purge_upto(&self, index: u64, state: (&str, &[u8])) -> Result<(), StoreError> {
        self.with(|m| m.raft_remove(..=index, Some(state)))
    }

    /// Entries with an index in `range`, in index order.
    pub fn entries(
        &self,
        range: impl std::ops::RangeBounds<u64>,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.with(|m| m.raft_entries(range))
    }

    /// The entry with the highest index.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.with(|m| m.raft_last())
    }

    /// Stores a state row (vote, committed, snapshot...), fsynced.
    pub fn put_state(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.with(|m| m.raft_state_put(key, value))
    }

    /// Reads a state row.
    pub fn state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|m| m.raft_state_get(key))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreOptions};

    #[test]
    fn append_truncate_purge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let log = store.raft_log();
            assert_eq!(log.last().unwrap(), None);
            let entries: Vec<(u64, Vec<u8>)> = (1..=5).map(|i| (i, vec![i as u8])).collect();
            log.append(&entries).unwrap();
            log.truncate_from(4).unwrap();
            assert_eq!(log.last().unwrap(), Some((3, vec![3])));
            log.purge_upto(1, ("purged", b"1")).unwrap();
            assert_eq!(log.entries(..).unwrap(), vec![(2, vec![2]), (3, vec![3])]);
            log.put_state("vote", b"v").unwrap();
            store.close().unwrap();
        }
        let (store, _) = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let log = store.raft_log();
        assert_eq!(log.entries(2..3).unwrap(), vec![(2, vec![2])]);
        assert_eq!(log.state("vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(log.state("purged").unwrap(), Some(b"1".to_vec()));
        assert_eq!(log.state("none").unwrap(), None);
    }
}
