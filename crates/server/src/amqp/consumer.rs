//! The AMQP side of a queue consumer: credit (prefetch, flow, connection
//! buffer) and the hand-off of deliveries to the connection task.

use crate::mailbox::UnboundedSender;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use tributary_core::{ConsumerSink, Delivery};

/// Deliveries a connection may have queued for its writer before queues stop
/// feeding its consumers (backpressure for no-ack consumers and slow sockets).
pub const CONNECTION_PENDING_LIMIT: usize = 2048;

/// What queues send to a connection task.
pub enum Outbound {
    /// A message for one of its consumers.
    Deliver(Arc<AmqpConsumer>, Delivery),
    /// A queue was deleted under one of its consumers.
    Cancelled(Arc<AmqpConsumer>),
    /// A persistent publish (confirm sequence `seq`) is on disk.
    Durable {
        /// Channel number.
        channel: u16,
        /// Which opening of that channel number.
        epoch: u64,
        /// Publish sequence number.
        seq: u64,
    },
    /// A committed transaction's persistent messages are on disk: send tx.commit-ok.
    TxDurable {
        /// Channel number.
        channel: u16,
        /// Which opening of that channel number.
        epoch: u64,
    },
}

/// Connection-wide state shared with the queues.
pub struct ConnectionCredit {
    /// Deliveries sent to the connection task and not yet written.
    pub pending: AtomicUsize,
    /// Body bytes of those deliveries.
    pub pending_bytes: AtomicUsize,
    /// Body bytes past which queues stop feeding the connection
    /// (`[limits] max_buffered_bytes`).
    pub max_pending_bytes: AtomicUsize,
    /// Set when a queue was refused because of `pending`; the task re-dispatches.
    pub starved: AtomicBool,
}

impl Default for ConnectionCredit {
    fn default() -> Self {
        ConnectionCredit {
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            max_pending_bytes: AtomicUsize::new(usize::MAX),
            starved: AtomicBool::new(false),
        }
    }
}

impl ConnectionCredit {
    /// Whether the connection has as many deliveries waiting as it may.
    fn full(&self) -> bool {
        self.pending.load(Ordering::Acquire) >= CONNECTION_PENDING_LIMIT
            || self.pending_bytes.load(Ordering::Acquire)
                >= self.max_pending_bytes.load(Ordering::Relaxed)
    }

    /// A delivery was taken from the connection task's channel.
    pub fn taken(&self, body_len: usize) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
        self.pending_bytes.fetch_sub(body_len, Ordering::AcqRel);
    }
}

/// Channel-wide credit: the global prefetch (basic.qos global=true) and flow.
pub struct ChannelCredit {
    /// 0 = unlimited.
    pub prefetch: AtomicU32,
    /// Unacked deliveries counted against `prefetch`.
    pub unacked: AtomicU32,
    /// channel.flow from the client.
    pub active: AtomicBool,
}

impl Default for ChannelCredit {
    fn default() -> Self {
        ChannelCredit {
            prefetch: AtomicU32::new(0),
            unacked: AtomicU32::new(0),
            active: AtomicBool::new(true),
        }
    }
}

/// Counts one more unacked delivery unless that would pass `limit` (0 = no limit).
fn take(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (limit == 0 || n < limit).then_some(n + 1)
        })
        .is_ok()
}

fn give(counter: &AtomicU32) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

/// One basic.consume.
pub struct AmqpConsumer {
    /// Channel it was declared on.
    pub channel: u16,
    /// Consumer tag.
    pub tag: Arc<str>,
    /// The same tag as a wire string, shared by every basic.deliver.
    pub wire_tag: tributary_amqp::ShortStr,
    /// basic.consume no-ack: deliveries are settled when sent.
    pub no_ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u32,
    /// Unacked deliveries of this consumer.
    pub unacked: AtomicU32,
    /// The channel's credit.
    pub channel_credit: Arc<ChannelCredit>,
    /// The connection's credit.
    pub connection: Arc<ConnectionCredit>,
    /// The connection task.
    pub tx: UnboundedSender<Outbound>,
    /// Cleared when the consumer is cancelled so late deliveries are recognised.
    pub live: AtomicBool,
}

impl AmqpConsumer {
    /// Returns one unit of credit after an ack, nack, reject or requeue.
    pub fn release(&self) {
        if !self.no_ack {
            give(&self.unacked);
            give(&self.channel_credit.unacked);
        }
    }
}

/// The sink handed to the core queue: wraps the consumer so it can be shared.
pub struct Sink(pub Arc<AmqpConsumer>);

impl ConsumerSink for Sink {
    fn try_reserve(&self) -> bool {
        let c = &self.0;
        if !c.live.load(Ordering::Acquire) || !c.channel_credit.active.load(Ordering::Acquire) {
            return false;
        }
        if c.connection.full() {
            c.connection.starved.store(true, Ordering::Release);
            return false;
        }
        if c.no_ack {
            return true;
        }
        if !take(&c.unacked, c.prefetch) {
            return false;
        }
        let global = c.channel_credit.prefetch.load(Ordering::Acquire);
        if !take(&c.channel_credit.unacked, global) {
            give(&c.unacked);
            return false;
        }
        true
    }

    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
        let body_len = delivery.entry.message.body.len();
        self.0.connection.pending.fetch_add(1, Ordering::AcqRel);
        self.0
            .connection
            .pending_bytes
            .fetch_add(body_len, Ordering::AcqRel);
        match self.0.tx.send(Outbound::Deliver(self.0.clone(), delivery)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.0.connection.taken(body_len);
                // The connection task is gone: the queue takes the message back.
                self.0.live.store(false, Ordering::Release);
                self.0.release();
                let Outbound::Deliver(_, d) = e.0 else {
                    return Ok(());
                };
                Err(d)
            }
        }
    }

    fn unreserve(&self) {
        self.0.release();
    }

    fn cancelled(&self) {
        let _ = self.0.tx.send(Outbound::Cancelled(self.0.clone()));
    }
}
