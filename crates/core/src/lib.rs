//! Protocol-neutral broker core: the message model, virtual hosts, exchanges,
//! bindings, queues and consumers. No sockets and no protocol bytes live here;
//! every protocol crate meets the others only through these types.

#![warn(missing_docs)]

pub mod args;
pub mod broker;
pub mod deadletter;
pub mod delayed;
pub mod error;
pub mod exchange;
pub mod message;
pub mod naming;
pub mod persist;
pub mod queue;
pub mod stream;
pub mod topic;
pub mod vhost;

pub use broker::Broker;
pub use error::{CoreError, CoreResult};
pub use exchange::{Exchange, ExchangeKind, ExchangeOptions};
pub use message::{Message, Properties, Table, Value};
pub use persist::{Persistence, SharedPersistence};
pub use queue::{
    Accepted, ConnectionId, ConsumerOptions, ConsumerSink, Delivery, Durability, Entry, Queue,
    QueueOptions,
};
pub use vhost::{DeclaredQueue, Enqueued, Routed, VHost};
