//! Per-channel state: consumers, unacknowledged deliveries, confirms, qos,
//! and the transaction buffer.

use super::consumer::{AmqpConsumer, ChannelCredit};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tributary_core::{Entry, Message, Queue};

/// A delivery the client has not settled yet.
pub struct Unacked {
    /// Delivery tag on this channel.
    pub tag: u64,
    /// Where it came from.
    pub queue: Arc<Queue>,
    /// The message and its queue position.
    pub entry: Entry,
    /// The consumer whose credit it holds (None for basic.get).
    pub consumer: Option<Arc<AmqpConsumer>>,
}

/// A consumer registered on the channel.
pub struct ChannelConsumer {
    /// The queue consumed from.
    pub queue: Arc<Queue>,
    /// The credit-holding consumer shared with the queue.
    pub consumer: Arc<AmqpConsumer>,
    /// For a stream consumer: wakes its reader task (credit came back, or it was cancelled).
    pub stream_wake: Option<Arc<tokio::sync::Notify>>,
}

impl ChannelConsumer {
    /// Wakes a stream consumer's reader task (credit came back).
    pub fn wake(&self) {
        if let Some(w) = &self.stream_wake {
            w.notify_one();
        }
    }
}

impl Drop for ChannelConsumer {
    /// A stream consumer's reader task sees its consumer is gone and ends.
    fn drop(&mut self) {
        self.wake();
    }
}

/// Work a transaction holds until tx.commit.
pub enum TxOp {
    /// A routed publish: the message and the queues it reached.
    Publish(Arc<Message>, Vec<Arc<Queue>>),
    /// basic.ack / nack / reject of these tags, requeue or not.
    Settle {
        /// Tags in ascending order.
        tags: Vec<u64>,
        /// Settlement kind.
        outcome: Outcome,
    },
}

/// A publisher confirm to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// basic.ack with multiple=true up to this sequence number.
    AckUpTo(u64),
    /// basic.nack of this one publish.
    Nack(u64),
}

/// How the client settled a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Processed.
    Ack,
    /// Put it back.
    Requeue,
    /// Drop it.
    Discard,
}

/// State of one open channel.
#[derive(Default)]
pub struct Channel {
    /// Next delivery tag to hand out (first is 1).
    pub last_delivery_tag: u64,
    /// Unsettled deliveries in tag order.
    pub unacked: VecDeque<Unacked>,
    /// Consumers by tag.
    pub consumers: HashMap<Arc<str>, ChannelConsumer>,
    /// Shared credit (global prefetch, flow).
    pub credit: Arc<ChannelCredit>,
    /// basic.qos global=false: prefetch for consumers created from now on.
    pub consumer_prefetch: u32,
    /// In confirm mode, the last publish sequence number.
    pub confirm_seq: Option<u64>,
    /// Confirms decided but not yet written (acks coalesced with multiple=true).
    pub confirm_out: Vec<Confirm>,
    /// Publishes a queue refused (reject-publish), to be nacked in order.
    pub nacked: std::collections::BTreeSet<u64>,
    /// In tx mode, the buffered operations.
    pub tx: Option<Vec<TxOp>>,
    /// Last queue declared on the channel (an empty queue name means it).
    pub last_queue: Option<Arc<str>>,
    /// Distinguishes successive openings of the same channel number, so a late
    /// durability notice never confirms a publish of a newer channel.
    pub epoch: u64,
    /// Confirm sequence numbers whose messages wait for the store's fsync, in order.
    pub awaiting_durable: VecDeque<u64>,
    /// Every publish up to this sequence number has been confirmed (or is about to be).
    pub confirmed_upto: u64,
    /// Exchanges this channel was found to have write access to.
    pub publish_permits: PublishPermits,
}

/// Most exchanges a channel remembers write access to (RabbitMQ keeps 12).
const PUBLISH_PERMITS_MAX: usize = 16;

/// The exchanges a channel may publish to, as checked under one generation of
/// the user database: basic.publish checks its exchange once, not per message,
/// until `users.json` changes.
#[derive(Default)]
pub struct PublishPermits {
    generation: u64,
    exchanges: Vec<Box<[u8]>>,
}

impl PublishPermits {
    /// Whether write access to `exchange` was granted under `generation`.
    pub fn allows(&self, generation: u64, exchange: &[u8]) -> bool {
        self.generation == generation && self.exchanges.iter().any(|e| **e == *exchange)
    }

    /// Records write access to `exchange`, checked under `generation` (which
    /// forgets what earlier generations granted).
    pub fn allow(&mut self, generation: u64, exchange: &[u8]) {
        if self.generation != generation {
            self.generation = generation;
            self.exchanges.clear();
        }
        if self.exchanges.len() >= PUBLISH_PERMITS_MAX {
            self.exchanges.remove(0);
        }
        self.exchanges.push(exchange.into());
    }
}

impl Channel {
    /// A channel numbered for its `epoch`.
    pub fn new(epoch: u64) -> Self {
        Channel {
            epoch,
            ..Channel::default()
        }
    }

    /// Records publish `seq` in confirm mode; `waits_for_disk` holds its
    /// confirm (and every later one) until the store reports it durable;
    /// `refused` makes it a basic.nack.
    pub fn published(&mut self, seq: u64, waits_for_disk: bool, refused: bool) {
        if refused {
            self.nacked.insert(seq);
        }
        if waits_for_disk {
            self.awaiting_durable.push_back(seq);
        }
        self.advance_confirms();
    }

    /// The store made everything up to publish `seq` durable.
    pub fn durable(&mut self, seq: u64) {
        while self.awaiting_durable.front().is_some_and(|s| *s <= seq) {
            self.awaiting_durable.pop_front();
        }
        self.advance_confirms();
    }

    fn advance_confirms(&mut self) {
        let last = self.confirm_seq.unwrap_or(0);
        let upto = self.awaiting_durable.front().map(|f| f - 1).unwrap_or(last);
        while let Some(&n) = self.nacked.first() {
            if n > upto {
                break;
            }
            self.nacked.pop_first();
            if n > self.confirmed_upto + 1 {
                self.confirm_out.push(Confirm::AckUpTo(n - 1));
            }
            self.confirm_out.push(Confirm::Nack(n));
            self.confirmed_upto = n;
        }
        if upto > self.confirmed_upto {
            self.confirmed_upto = upto;
            match self.confirm_out.last_mut() {
                Some(Confirm::AckUpTo(prev)) => *prev = upto,
                _ => self.confirm_out.push(Confirm::AckUpTo(upto)),
            }
        }
    }

    /// Takes the unacked deliveries a settle refers to: `tag` alone, or with
    /// `multiple` every tag up to it (tag 0 + multiple = all). None when a tag
    /// is unknown (406 for the caller).
    pub fn take_unacked(&mut self, tag: u64, multiple: bool) -> Option<Vec<Unacked>> {
        if multiple {
            if tag == 0 {
                return Some(self.unacked.drain(..).collect());
            }
            let end = self.unacked.partition_point(|u| u.tag <= tag);
            if end == 0 {
                return None;
            }
            return Some(self.unacked.drain(..end).collect());
        }
        let at = self.unacked.binary_search_by_key(&tag, |u| u.tag).ok()?;
        self.unacked.remove(at).map(|u| vec![u])
    }

    /// Checks a settle refers only to known tags, without taking them (tx mode).
    pub fn knows(&self, tag: u64, multiple: bool) -> bool {
        if multiple && tag == 0 {
            return true;
        }
        if multiple {
            return self.unacked.front().is_some_and(|u| u.tag <= tag);
        }
        self.unacked.binary_search_by_key(&tag, |u| u.tag).is_ok()
    }
}

/// Settles deliveries: acks them, or requeues or drops them, and returns credit.
pub fn settle(deliveries: Vec<Unacked>, outcome: Outcome) {
    let mut requeue: Vec<(Arc<Queue>, Vec<Entry>)> = Vec::new();
    for u in deliveries {
        if let Some(c) = &u.consumer {
            c.release();
        }
        match outcome {
            Outcome::Requeue => match requeue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, v)) => v.push(u.entry),
                None => requeue.push((u.queue, vec![u.entry])),
            },
            Outcome::Ack => u.queue.settle(&u.entry),
            Outcome::Discard => u.queue.reject(u.entry),
        }
    }
    for (q, entries) in requeue {
        q.requeue(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::PublishPermits;

    #[test]
    fn publish_permits_last_one_generation() {
        let mut p = PublishPermits::default();
        assert!(!p.allows(0, b""));
        p.allow(3, b"amq.topic");
        assert!(p.allows(3, b"amq.topic"));
        assert!(!p.allows(3, b"amq.direct"));
        assert!(!p.allows(4, b"amq.topic"));
        p.allow(4, b"amq.direct");
        assert!(!p.allows(4, b"amq.topic"));
        for i in 0..40u8 {
            p.allow(4, &[i]);
        }
        assert!(p.allows(4, &[39]));
        assert!(!p.allows(4, &[0]));
    }
}
