//! Metadata (definitions, users, ...) in `meta.redb`: named tables of `&str -> &[u8]`.
//!
//! Each call is its own write transaction committed with `Durability::Immediate` (one fsync), so
//! callers should batch where they can.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use crate::StoreError;

pub(crate) fn meta_err(e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
        other => StoreError::Meta(Box::new(other)),
    }
}

pub(crate) struct Meta {
    db: Database,
}

impl Meta {
    pub(crate) fn open(path: &Path) -> Result<Meta, StoreError> {
        let db = Database::create(path).map_err(meta_err)?;
        Ok(Meta { db })
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub(crate) fn put(&self, table: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        let mut tx = self.db.begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        {
            let mut t = tx.open_table(def).map_err(meta_err)?;
            t.insert(key, value).map_err(meta_err)?;
        }
        tx.commit().map_err(meta_err)
    }

    /// Applies puts and deletes in order in one transaction (one fsync for all).
    pub(crate) fn apply(&self, ops: &[crate::MetaOp<'_>]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        for op in ops {
            let (crate::MetaOp::Put { table, .. } | crate::MetaOp::Delete { table, .. }) = op;
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
            let mut t = tx.open_table(def).map_err(meta_err)?;
            match op {
                crate::MetaOp::Put { key, value, .. } => {
                    t.insert(*key, *value).map_err(meta_err)?;
                }
                crate::MetaOp::Delete { key, .. } => {
                    t.remove(*key).map_err(meta_err)?;
                }
            }
        }
        tx.commit().map_err(meta_err)
    }

    pub(crate) fn delete(&self, table: &str, key: &str) -> Result<(), StoreError> {
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        let mut tx = self.db.begin_write().map_err(meta_err)?;
        tx.set_durability(Durability::Immediate).map_err(meta_err)?;
        {
            let mut t = tx.open_table(def).map_err(meta_err)?;
            t.remove(key).map_err(meta_err)?;
        }
        tx.commit().map_err(meta_err)
    }

    pub(crate) fn list(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(table);
        let tx = self.db.begin_read().map_err(meta_err)?;
        let t = match tx.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(meta_err(e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(meta_err)? {
            let (k, v) = row.map_err(meta_err)?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }
}
