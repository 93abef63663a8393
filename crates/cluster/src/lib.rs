//! Tributary clustering: the metadata Raft group on openraft.
//!
//! - [`defs`]: the commands and the deterministic state machine of the replicated
//!   definitions (exchanges, queues, bindings, the user database), unit-tested on its own;
//! - [`storage`]: openraft's log storage in the store's `meta.redb` and the state machine
//!   with its snapshots;
//! - [`wire`] and [`network`]: the cluster link (length-prefixed postcard frames, an HMAC
//!   challenge-response over the shared secret, optional TLS supplied by the server);
//! - [`node`]: a running node, forming or joining a cluster, proposing commands.

// openraft's trait signatures fix its large error types (StorageError, RPCError); the
// helpers that build them return them as they are.
#![allow(clippy::result_large_err)]

pub mod defs;
pub mod network;
pub mod node;
pub mod storage;
pub mod wire;

pub use defs::{Binding, Command, Definitions, Outcome};
pub use network::Tls;
pub use node::{Cluster, ClusterError, Member, NodeConfig, Status};
pub use storage::{Applier, NodeId};

use std::io::Cursor;

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata group.
    pub TypeConfig:
        D = Command,
        R = Outcome,
);
