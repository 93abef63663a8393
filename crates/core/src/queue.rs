//! Queues: ordered ready messages, consumers fed round-robin under credit, and
//! the bookkeeping for unacknowledged deliveries.
//!
//! A queue does its dispatch synchronously in whichever task touched it
//! (publisher, acker, new consumer), under its own short lock; consumers are
//! [`ConsumerSink`]s that accept a delivery without blocking. There is no
//! global lock on the publish path: two publishers only meet when they publish
//! into the same queue.

use crate::error::{CoreError, CoreResult};
use crate::message::{Message, Table};
use crate::persist::{MemoryBudget, SharedPersistence, Stored, decode_message};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Identifies a client connection, for exclusive queues and consumers.
pub type ConnectionId = u64;

/// A message waiting in (or delivered from) a queue.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the queue; requeued messages go back to their place by it.
    pub seq: u64,
    /// The shared message.
    pub message: Arc<Message>,
    /// True once the message was delivered before and came back.
    pub redelivered: bool,
    /// The store's copy, when there is one (persistent message in a durable
    /// queue, or a message paged out of memory).
    pub stored: Option<Stored>,
}

/// Messages kept loaded at the head of a queue even when over the memory budget.
const KEEP_LOADED_AT_HEAD: usize = 64;

/// A ready message: in memory, or on disk only.
#[derive(Debug)]
enum Slot {
    Loaded(Entry),
    Paged {
        seq: u64,
        redelivered: bool,
        stored: Stored,
        size: usize,
    },
}

impl Slot {
    fn seq(&self) -> u64 {
        match self {
            Slot::Loaded(e) => e.seq,
            Slot::Paged { seq, .. } => *seq,
        }
    }

    fn size(&self) -> usize {
        match self {
            Slot::Loaded(e) => e.message.size(),
            Slot::Paged { size, .. } => *size,
        }
    }

    fn stored(&self) -> Option<Stored> {
        match self {
            Slot::Loaded(e) => e.stored,
            Slot::Paged { stored, .. } => Some(*stored),
        }
    }
}

/// A delivery handed to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The queue it came from, for acks and requeues.
    pub queue: Arc<Queue>,
    /// The message and its position.
    pub entry: Entry,
}

/// The consumer side of a queue, implemented by each protocol at the edge.
pub trait ConsumerSink: Send + Sync {
    /// Takes one unit of credit (prefetch window, flow, connection buffer);
    /// false means "not now", and the owner calls [`Queue::dispatch`] when
    /// credit comes back.
    fn try_reserve(&self) -> bool;
    /// Takes a delivery for which credit was reserved. Must not block. A sink
    /// whose consumer is gone hands the delivery back; the queue then keeps the
    /// message and drops the consumer.
    fn deliver(&self, delivery: Delivery) -> Result<(), Delivery>;
    /// The queue was deleted under the consumer; the protocol tells its client.
    fn cancelled(&self);
}

struct Consumer {
    tag: Arc<str>,
    owner: ConnectionId,
    channel: u16,
    exclusive: bool,
    no_ack: bool,
    sink: Arc<dyn ConsumerSink>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Slot>,
    ready_bytes: usize,
    unacked: usize,
    consumers: Vec<Consumer>,
    cursor: usize,
    next_seq: u64,
    had_consumer: bool,
    deleted: bool,
    paged: bool,
}

/// Declared attributes of a queue, compared on redeclare.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueOptions {
    /// Survives a broker restart.
    pub durable: bool,
    /// Owned by one connection; deleted when it closes.
    pub exclusive: bool,
    /// Deleted when its last consumer goes away.
    pub auto_delete: bool,
    /// `x-` arguments.
    pub arguments: Table,
}

/// A queue's link to the store: where its persistent messages go (durable
/// queues) and where bodies go when memory runs short (every queue).
#[derive(Clone)]
pub struct Durability {
    /// The queue's id in the store when it is durable.
    pub durable_id: Option<u64>,
    /// A store id, never persisted as a definition, for transient messages paged
    /// out of memory (dropped at the next start).
    pub scratch_id: u64,
    /// The store.
    pub persistence: SharedPersistence,
    /// The shared budget for bodies in memory.
    pub budget: Arc<MemoryBudget>,
}

/// A queue.
pub struct Queue {
    name: Arc<str>,
    vhost: Arc<str>,
    options: QueueOptions,
    owner: Option<ConnectionId>,
    durability: Option<Durability>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

/// A snapshot of a queue's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready for delivery.
    pub ready: usize,
    /// Bytes of bodies ready for delivery.
    pub ready_bytes: usize,
    /// Delivered, not yet acknowledged.
    pub unacked: usize,
    /// Attached consumers.
    pub consumers: usize,
}

impl Queue {
    /// Creates an empty queue; `owner` is set for exclusive queues.
    pub fn new(
        vhost: Arc<str>,
        name: Arc<str>,
        options: QueueOptions,
        owner: Option<ConnectionId>,
        durability: Option<Durability>,
    ) -> Arc<Self> {
        Arc::new(Queue {
            name,
            vhost,
            options,
            owner,
            durability,
            state: Mutex::new(State::default()),
        })
    }

    /// The store id of a durable queue backed by persistence.
    pub fn durable_id(&self) -> Option<u64> {
        self.durability.as_ref().and_then(|d| d.durable_id)
    }

    /// The message left the queue for good: drop the store's copy.
    fn forget(&self, stored: Option<Stored>) {
        if let (Some(d), Some(s)) = (&self.durability, stored) {
            d.persistence.ack(s.queue, s.msg_id);
        }
    }

    /// The message is being handed out: record it so a restart flags it
    /// redelivered, or, for deliveries that need no ack, drop the store's copy.
    fn handed_out(&self, stored: Option<Stored>, redelivered: bool, no_ack: bool) {
        if let (Some(d), Some(s)) = (&self.durability, stored) {
            if no_ack {
                d.persistence.ack(s.queue, s.msg_id);
            } else if !redelivered && Some(s.queue) == d.durable_id {
                d.persistence.delivered(s.queue, s.msg_id);
            }
        }
    }

    /// Adds a message at the tail, in memory or, over the budget, on disk only.
    fn push(&self, st: &mut State, entry: Entry) {
        let size = entry.message.size();
        st.ready_bytes += size;
        if let Some(d) = &self.durability {
            if st.ready.len() >= KEEP_LOADED_AT_HEAD && d.budget.would_exceed(size) {
                let stored = match entry.stored {
                    Some(s) if s.at.is_some() => Some(s),
                    _ => {
                        let msg_id = d.persistence.next_msg_id();
                        d.persistence
                            .publish(msg_id, &[d.scratch_id], &entry.message)
                            .map(|at| Stored {
                                queue: d.scratch_id,
                                msg_id,
                                at: Some(at),
                            })
                    }
                };
                if let Some(stored) = stored {
                    // A persistent copy filed under the durable id stays the one to ack.
                    st.paged |= stored.queue == d.scratch_id;
                    st.ready.push_back(Slot::Paged {
                        seq: entry.seq,
                        redelivered: entry.redelivered,
                        stored,
                        size,
                    });
                    return;
                }
            }
            d.budget.take(size);
        }
        st.ready.push_back(Slot::Loaded(entry));
    }

    /// Takes the head message, reading it back from disk when it was paged out.
    /// A paged message that cannot be read is reported and dropped.
    fn pop(&self, st: &mut State) -> Option<Entry> {
        loop {
            let slot = st.ready.pop_front()?;
            st.ready_bytes -= slot.size();
            match slot {
                Slot::Loaded(entry) => {
                    if let Some(d) = &self.durability {
                        d.budget.release(entry.message.size());
                    }
                    return Some(entry);
                }
                Slot::Paged {
                    seq,
                    redelivered,
                    stored,
                    ..
                } => match self.page_in(stored) {
                    Some(message) => {
                        return Some(Entry {
                            seq,
                            message,
                            redelivered,
                            stored: Some(stored),
                        });
                    }
                    None => self.forget(Some(stored)),
                },
            }
        }
    }

    fn page_in(&self, stored: Stored) -> Option<Arc<Message>> {
        let d = self.durability.as_ref()?;
        let payload = stored.at.and_then(|at| d.persistence.read(at))?;
        decode_message(payload).ok().map(Arc::new)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's name, shared.
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// Declared attributes.
    pub fn options(&self) -> &QueueOptions {
        &self.options
    }

    /// The owning connection of an exclusive queue.
    pub fn owner(&self) -> Option<ConnectionId> {
        self.owner
    }

    /// Refuses access from connections other than an exclusive queue's owner (405).
    pub fn check_access(&self, conn: ConnectionId) -> CoreResult<()> {
        match self.owner {
            Some(owner) if owner != conn => Err(CoreError::ResourceLocked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                self.name, self.vhost
            ))),
            _ => Ok(()),
        }
    }

    /// Current counters.
    pub fn stats(&self) -> QueueStats {
        let st = self.state.lock();
        QueueStats {
            ready: st.ready.len(),
            ready_bytes: st.ready_bytes,
            unacked: st.unacked,
            consumers: st.consumers.len(),
        }
    }

    /// True once the queue was deleted.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Appends a routed message and feeds consumers. `msg_id` is the store id
    /// when the message was persisted for this queue.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, stored: Option<Stored>) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        self.push(
            &mut st,
            Entry {
                seq,
                message,
                redelivered: false,
                stored,
            },
        );
        self.dispatch_locked(&mut st);
    }

    /// Puts recovered messages back (in their log order) after a restart.
    pub fn restore(&self, messages: impl IntoIterator<Item = (Arc<Message>, Stored, bool)>) {
        let mut st = self.state.lock();
        for (message, stored, redelivered) in messages {
            let seq = st.next_seq;
            st.next_seq += 1;
            self.push(
                &mut st,
                Entry {
                    seq,
                    message,
                    redelivered,
                    stored: Some(stored),
                },
            );
        }
    }

    /// Feeds consumers that have credit; call after credit comes back.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let n = st.consumers.len();
            let Some(idx) = (0..n)
                .map(|i| (st.cursor + i) % n)
                .find(|&i| st.consumers[i].sink.try_reserve())
            else {
                return;
            };
            st.cursor = (idx + 1) % n;
            let Some(entry) = self.pop(st) else {
                return;
            };
            let consumer = &st.consumers[idx];
            let sink = consumer.sink.clone();
            let counted = !consumer.no_ack;
            let (stored, redelivered) = (entry.stored, entry.redelivered);
            if counted {
                st.unacked += 1;
            }
            let result = sink.deliver(Delivery {
                queue: self.clone(),
                entry,
            });
            if result.is_ok() {
                self.handed_out(stored, redelivered, !counted);
            }
            if let Err(back) = result {
                if counted {
                    st.unacked -= 1;
                }
                st.ready_bytes += back.entry.message.size();
                if let Some(d) = &self.durability {
                    d.budget.take(back.entry.message.size());
                }
                st.ready.push_front(Slot::Loaded(back.entry));
                st.consumers.remove(idx);
                st.cursor = 0;
            }
        }
    }

    /// basic.get: takes the head message, and reports how many remain.
    pub fn get(&self, no_ack: bool) -> Option<(Entry, usize)> {
        let mut st = self.state.lock();
        if st.deleted {
            return None;
        }
        let entry = self.pop(&mut st)?;
        self.handed_out(entry.stored, entry.redelivered, no_ack);
        if !no_ack {
            st.unacked += 1;
        }
        Some((entry, st.ready.len()))
    }

    /// Settles a delivery as acknowledged (or dropped): it leaves the queue for good.
    pub fn settle(&self, entry: &Entry) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(1);
        if !st.deleted {
            self.forget(entry.stored);
        }
    }

    /// Puts unacknowledged deliveries back in their original places, flagged
    /// redelivered, and feeds consumers.
    pub fn requeue(self: &Arc<Self>, mut entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(entries.len());
        if st.deleted {
            return;
        }
        entries.sort_unstable_by_key(|e| e.seq);
        for mut entry in entries.into_iter().rev() {
            entry.redelivered = true;
            st.ready_bytes += entry.message.size();
            if let Some(d) = &self.durability {
                d.budget.take(entry.message.size());
            }
            let at = st.ready.partition_point(|e| e.seq() < entry.seq);
            st.ready.insert(at, Slot::Loaded(entry));
        }
        self.dispatch_locked(&mut st);
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let mut st = self.state.lock();
        let n = st.ready.len();
        for slot in std::mem::take(&mut st.ready) {
            self.release(&slot);
            self.forget(slot.stored());
        }
        st.ready_bytes = 0;
        n
    }

    /// Attaches a consumer. Exclusive consumers need an idle queue, and an
    /// exclusive consumer keeps everyone else out (403, as RabbitMQ).
    pub fn add_consumer(
        self: &Arc<Self>,
        tag: Arc<str>,
        owner: ConnectionId,
        channel: u16,
        exclusive: bool,
        no_ack: bool,
        sink: Arc<dyn ConsumerSink>,
    ) -> CoreResult<()> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(CoreError::NotFound(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        if st.consumers.iter().any(|c| c.exclusive) || (exclusive && !st.consumers.is_empty()) {
            return Err(CoreError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        st.consumers.push(Consumer {
            tag,
            owner,
            channel,
            exclusive,
            no_ack,
            sink,
        });
        st.had_consumer = true;
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detaches a consumer. Returns true when an auto-delete queue just lost
    /// its last consumer and must now be deleted by its vhost.
    pub fn remove_consumer(&self, owner: ConnectionId, channel: u16, tag: &str) -> bool {
        let mut st = self.state.lock();
        st.consumers
            .retain(|c| !(c.owner == owner && c.channel == channel && &*c.tag == tag));
        if st.cursor >= st.consumers.len() {
            st.cursor = 0;
        }
        self.options.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted
    }

    /// Marks the queue deleted, drops its messages and tells consumers.
    /// Returns the number of ready messages it held.
    pub(crate) fn mark_deleted(&self) -> usize {
        let (n, sinks, paged) = {
            let mut st = self.state.lock();
            st.deleted = true;
            let n = st.ready.len();
            for slot in std::mem::take(&mut st.ready) {
                self.release(&slot);
            }
            st.ready_bytes = 0;
            let sinks: Vec<_> = st.consumers.drain(..).map(|c| c.sink).collect();
            (n, sinks, st.paged)
        };
        if let Some(d) = &self.durability {
            if let Some(id) = d.durable_id {
                d.persistence.queue_deleted(id);
            }
            if paged {
                d.persistence.queue_deleted(d.scratch_id);
            }
        }
        for sink in sinks {
            sink.cancelled();
        }
        n
    }

    /// Returns a loaded slot's bytes to the memory budget.
    fn release(&self, slot: &Slot) {
        if let (Some(d), Slot::Loaded(e)) = (&self.durability, slot) {
            d.budget.release(e.message.size());
        }
    }

    /// Checks the delete preconditions (if-unused, if-empty).
    pub(crate) fn check_delete(&self, if_unused: bool, if_empty: bool) -> CoreResult<()> {
        let st = self.state.lock();
        if if_unused && !st.consumers.is_empty() {
            return Err(CoreError::PreconditionFailed(format!(
                "queue '{}' in vhost '{}' in use",
                self.name, self.vhost
            )));
        }
        if if_empty && !st.ready.is_empty() {
            return Err(CoreError::PreconditionFailed(format!(
                "queue '{}' in vhost '{}' is not empty",
                self.name, self.vhost
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Properties;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct TestSink {
        credit: AtomicUsize,
        got: Mutex<Vec<Delivery>>,
        cancelled: AtomicUsize,
    }

    impl ConsumerSink for TestSink {
        fn try_reserve(&self) -> bool {
            self.credit
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1))
                .is_ok()
        }
        fn deliver(&self, delivery: Delivery) -> Result<(), Delivery> {
            self.got.lock().push(delivery);
            Ok(())
        }
        fn cancelled(&self) {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn sink(credit: usize) -> Arc<TestSink> {
        Arc::new(TestSink {
            credit: AtomicUsize::new(credit),
            got: Mutex::new(Vec::new()),
            cancelled: AtomicUsize::new(0),
        })
    }

    fn msg(body: &'static str) -> Arc<Message> {
        Message::new(
            Bytes::new(),
            Bytes::new(),
            Properties::default(),
            Bytes::from_static(body.as_bytes()),
        )
    }

    fn queue() -> Arc<Queue> {
        Queue::new("/".into(), "q".into(), QueueOptions::default(), None, None)
    }

    #[test]
    fn credit_limits_deliveries_and_dispatch_resumes() {
        let q = queue();
        let s = sink(2);
        q.add_consumer("c".into(), 1, 1, false, false, s.clone())
            .unwrap();
        for b in ["1", "2", "3"] {
            q.publish(msg(b), None);
        }
        assert_eq!(s.got.lock().len(), 2);
        assert_eq!(q.stats().ready, 1);
        assert_eq!(q.stats().unacked, 2);
        s.credit.store(1, Ordering::SeqCst);
        q.dispatch();
        assert_eq!(s.got.lock().len(), 3);
    }

    #[test]
    fn requeue_keeps_place_and_flags_redelivered() {
        let q = queue();
        for b in ["1", "2", "3"] {
            q.publish(msg(b), None);
        }
        let (a, _) = q.get(false).unwrap();
        let (b, _) = q.get(false).unwrap();
        q.requeue(vec![b, a]);
        let (first, left) = q.get(true).unwrap();
        assert_eq!(&first.message.body[..], b"1");
        assert!(first.redelivered);
        assert_eq!(left, 2);
        assert_eq!(&q.get(true).unwrap().0.message.body[..], b"2");
        let third = q.get(true).unwrap().0;
        assert_eq!(&third.message.body[..], b"3");
        assert!(!third.redelivered);
    }

    #[test]
    fn round_robin_between_consumers() {
        let q = queue();
        let (a, b) = (sink(10), sink(10));
        q.add_consumer("a".into(), 1, 1, false, false, a.clone())
            .unwrap();
        q.add_consumer("b".into(), 1, 1, false, false, b.clone())
            .unwrap();
        for _ in 0..4 {
            q.publish(msg("x"), None);
        }
        assert_eq!(a.got.lock().len(), 2);
        assert_eq!(b.got.lock().len(), 2);
    }

    #[test]
    fn exclusive_consumer_refuses_others() {
        let q = queue();
        q.add_consumer("a".into(), 1, 1, true, false, sink(1))
            .unwrap();
        let err = q
            .add_consumer("b".into(), 2, 1, false, false, sink(1))
            .unwrap_err();
        assert!(matches!(err, CoreError::AccessRefused(_)));
    }

    #[test]
    fn deletion_cancels_consumers() {
        let q = queue();
        let s = sink(1);
        q.add_consumer("a".into(), 1, 1, false, false, s.clone())
            .unwrap();
        q.mark_deleted();
        assert_eq!(s.cancelled.load(Ordering::SeqCst), 1);
        assert!(q.is_deleted());
    }
}
