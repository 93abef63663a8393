//! The replicated definitions: commands and the deterministic machine that applies them.
//!
//! Every node applies the same committed commands in the same order to a [`Definitions`] value
//! and gets the same state and the same [`Outcome`] for each command: no clock, no randomness,
//! no IO here. The server turns an accepted command into a change of its local broker (see
//! [`crate::Applier`]).
//!
//! Objects are carried as the core's own binary definitions (`ExchangeDef`, `QueueDef`,
//! `BindingDef` encodings), opaque to this crate apart from the names that cascades need.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A definition change proposed through the metadata Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Declare (or redeclare) an exchange.
    DeclareExchange {
        /// Vhost.
        vhost: String,
        /// Exchange name.
        name: String,
        /// The core's `ExchangeDef` encoding.
        def: Vec<u8>,
    },
    /// Delete an exchange and every binding from or to it.
    DeleteExchange {
        /// Vhost.
        vhost: String,
        /// Exchange name.
        name: String,
    },
    /// Declare a queue. Its messages stay on `node` (classic queues are not replicated yet).
    DeclareQueue {
        /// Vhost.
        vhost: String,
        /// Queue name.
        name: String,
        /// The core's `QueueDef` encoding.
        def: Vec<u8>,
        /// The node it was declared on.
        node: u64,
    },
    /// Delete a queue and its bindings.
    DeleteQueue {
        /// Vhost.
        vhost: String,
        /// Queue name.
        name: String,
    },
    /// Add a binding.
    Bind(Binding),
    /// Remove a binding.
    Unbind(Binding),
    /// Replace the user database document (users, hashes, permissions, vhosts) if its
    /// replicated version is still `expected` (compare-and-set, so that two nodes editing
    /// at once cannot lose an edit: the loser retries on the newer document).
    PutUsers {
        /// The version the edit was made on.
        expected: u64,
        /// The whole `users.json` document.
        document: Vec<u8>,
    },
}

impl Command {
    /// A short description for logs and errors ("declare queue 'q'").
    pub fn describe(&self) -> String {
        match self {
            Command::DeclareExchange { name, .. } => format!("declare exchange '{name}'"),
            Command::DeleteExchange { name, .. } => format!("delete exchange '{name}'"),
            Command::DeclareQueue { name, .. } => format!("declare queue '{name}'"),
            Command::DeleteQueue { name, .. } => format!("delete queue '{name}'"),
            Command::Bind(b) => format!("bind '{}' to '{}'", b.destination, b.source),
            Command::Unbind(b) => format!("unbind '{}' from '{}'", b.destination, b.source),
            Command::PutUsers { .. } => "change users, permissions or vhosts".into(),
        }
    }

    /// The vhost the command is about (`None` for the user database).
    pub fn vhost(&self) -> Option<&str> {
        match self {
            Command::DeclareExchange { vhost, .. }
            | Command::DeleteExchange { vhost, .. }
            | Command::DeclareQueue { vhost, .. }
            | Command::DeleteQueue { vhost, .. } => Some(vhost),
            Command::Bind(b) | Command::Unbind(b) => Some(&b.vhost),
            Command::PutUsers { .. } => None,
        }
    }
}

/// A binding between two replicated objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    /// Vhost.
    pub vhost: String,
    /// Source exchange.
    pub source: String,
    /// True when the destination is an exchange.
    pub to_exchange: bool,
    /// Destination exchange or queue.
    pub destination: String,
    /// Binding key.
    pub key: String,
    /// The core's `BindingDef` encoding (arguments included), which also makes two
    /// bindings that differ only in their arguments distinct.
    pub def: Vec<u8>,
}

/// A replicated queue declaration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The core's `QueueDef` encoding.
    pub def: Vec<u8>,
    /// The node that declared it and holds its messages.
    pub node: u64,
}

/// The replicated user database document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersDocument {
    /// Bumped by every accepted [`Command::PutUsers`].
    pub version: u64,
    /// The `users.json` bytes.
    pub document: Vec<u8>,
}

/// What applying one command did. The same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The state changed (or already was as asked).
    Applied,
    /// A [`Command::PutUsers`] made on an older document: read the current one and retry.
    Conflict {
        /// The current version.
        current: u64,
    },
}

/// Name of an object in a vhost.
pub type Key = (String, String);

/// The replicated definitions of the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    /// Exchanges by (vhost, name): the `ExchangeDef` encoding.
    pub exchanges: BTreeMap<Key, Vec<u8>>,
    /// Queues by (vhost, name).
    pub queues: BTreeMap<Key, QueueEntry>,
    /// Bindings.
    pub bindings: BTreeSet<Binding>,
    /// The user database, once any node changed it in the cluster.
    pub users: Option<UsersDocument>,
}

impl Definitions {
    /// Applies one command. Deterministic: the result depends on `self` and `command` only.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::DeclareExchange { vhost, name, def } => {
                self.exchanges
                    .insert((vhost.clone(), name.clone()), def.clone());
            }
            Command::DeleteExchange { vhost, name } => {
                self.exchanges.remove(&(vhost.clone(), name.clone()));
                self.bindings.retain(|b| {
                    !(b.vhost == *vhost
                        && (b.source == *name || (b.to_exchange && b.destination == *name)))
                });
            }
            Command::DeclareQueue {
                vhost,
                name,
                def,
                node,
            } => {
                self.queues.insert(
                    (vhost.clone(), name.clone()),
                    QueueEntry {
                        def: def.clone(),
                        node: *node,
                    },
                );
            }
            Command::DeleteQueue { vhost, name } => {
                self.queues.remove(&(vhost.clone(), name.clone()));
                self.bindings
                    .retain(|b| !(b.vhost == *vhost && !b.to_exchange && b.destination == *name));
            }
            Command::Bind(b) => {
                self.bindings.insert(b.clone());
            }
            Command::Unbind(b) => {
                self.bindings.remove(b);
            }
            Command::PutUsers { expected, document } => {
                let current = self.users_version();
                if *expected != current {
                    return Outcome::Conflict { current };
                }
                self.users = Some(UsersDocument {
                    version: current + 1,
                    document: document.clone(),
                });
            }
        }
        Outcome::Applied
    }

    /// The version of the user database document (0 before the first change).
    pub fn users_version(&self) -> u64 {
        self.users.as_ref().map_or(0, |u| u.version)
    }

    /// Serializes the state for a snapshot.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    /// Reads a snapshot written by [`Definitions::to_snapshot`].
    pub fn from_snapshot(bytes: &[u8]) -> Result<Definitions, SnapshotError> {
        match bytes.split_first() {
            None => Ok(Definitions::default()),
            Some((&SNAPSHOT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&v, _)) => Err(SnapshotError::Version(v)),
        }
    }
}

/// Version byte in front of a snapshot of the definitions.
const SNAPSHOT_VERSION: u8 = 1;

/// A snapshot that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Written by a newer version.
    #[error("unknown definitions snapshot version {0}")]
    Version(u8),
    /// Damaged bytes.
    #[error("cannot decode the definitions snapshot: {0}")]
    Decode(#[from] postcard::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(source: &str, to_exchange: bool, destination: &str) -> Binding {
        Binding {
            vhost: "/".into(),
            source: source.into(),
            to_exchange,
            destination: destination.into(),
            key: "k".into(),
            def: vec![1, 2],
        }
    }

    fn sample() -> Vec<Command> {
        vec![
            Command::DeclareExchange {
                vhost: "/".into(),
                name: "x".into(),
                def: vec![1],
            },
            Command::DeclareExchange {
                vhost: "/".into(),
                name: "y".into(),
                def: vec![2],
            },
            Command::DeclareQueue {
                vhost: "/".into(),
                name: "q".into(),
                def: vec![3],
                node: 2,
            },
            Command::Bind(binding("x", false, "q")),
            Command::Bind(binding("x", true, "y")),
            Command::Bind(binding("y", false, "q")),
        ]
    }

    #[test]
    fn apply_declares_and_cascades() {
        let mut d = Definitions::default();
        for c in sample() {
            assert_eq!(d.apply(&c), Outcome::Applied);
        }
        assert_eq!(d.exchanges.len(), 2);
        assert_eq!(d.queues[&("/".into(), "q".into())].node, 2);
        assert_eq!(d.bindings.len(), 3);
        // Deleting x removes x→q and x→y, keeps y→q.
        d.apply(&Command::DeleteExchange {
            vhost: "/".into(),
            name: "x".into(),
        });
        assert_eq!(
            d.bindings.iter().collect::<Vec<_>>(),
            vec![&binding("y", false, "q")]
        );
        d.apply(&Command::DeleteQueue {
            vhost: "/".into(),
            name: "q".into(),
        });
        assert!(d.bindings.is_empty());
        assert!(d.queues.is_empty());
        // Same name in another vhost is another object.
        d.apply(&Command::Unbind(binding("y", false, "q")));
        assert_eq!(d.exchanges.len(), 1);
    }

    #[test]
    fn users_document_is_compare_and_set() {
        let mut d = Definitions::default();
        let put = |expected, doc: &[u8]| Command::PutUsers {
            expected,
            document: doc.to_vec(),
        };
        assert_eq!(d.apply(&put(0, b"a")), Outcome::Applied);
        assert_eq!(d.users_version(), 1);
        // A second edit made on version 0 lost the race.
        assert_eq!(d.apply(&put(0, b"b")), Outcome::Conflict { current: 1 });
        assert_eq!(d.users.as_ref().unwrap().document, b"a");
        assert_eq!(d.apply(&put(1, b"b")), Outcome::Applied);
        assert_eq!(d.users.as_ref().unwrap().document, b"b");
    }

    #[test]
    fn same_commands_same_state() {
        let mut a = Definitions::default();
        let mut b = Definitions::default();
        for c in sample() {
            assert_eq!(a.apply(&c), b.apply(&c));
        }
        assert_eq!(a, b);
    }

    #[test]
    fn snapshot_round_trip_and_restore() {
        let mut d = Definitions::default();
        for c in sample() {
            d.apply(&c);
        }
        d.apply(&Command::PutUsers {
            expected: 0,
            document: b"{}".to_vec(),
        });
        let bytes = d.to_snapshot().unwrap();
        let mut restored = Definitions::from_snapshot(&bytes).unwrap();
        assert_eq!(restored, d);
        // The restored machine goes on exactly like the original.
        let next = Command::DeleteExchange {
            vhost: "/".into(),
            name: "y".into(),
        };
        assert_eq!(restored.apply(&next), d.apply(&next));
        assert_eq!(restored, d);
        assert_eq!(
            Definitions::from_snapshot(&[]).unwrap(),
            Definitions::default()
        );
        assert!(matches!(
            Definitions::from_snapshot(&[9, 0]),
            Err(SnapshotError::Version(9))
        ));
        assert!(Definitions::from_snapshot(&[1, 0xff]).is_err());
    }
}
