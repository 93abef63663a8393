//! Queues: ready messages in priority and arrival order, consumers fed under
//! credit, and everything RabbitMQ users expect of a queue: TTLs, length
//! limits with overflow policies, dead-lettering, single active consumer,
//! consumer priorities, delivery limits and paging beyond the memory budget.
//!
//! A queue does its dispatch synchronously in whichever task touched it
//! (publisher, acker, new consumer), under its own short lock; consumers are
//! [`ConsumerSink`]s that accept a delivery without blocking. There is no
//! global lock on the publish path: two publishers only meet when they publish
//! into the same queue. Messages a queue gives up on are collected under the
//! lock and dead-lettered after it is released, so a dead-letter route back
//! into the same queue cannot deadlock.

use crate::args::{Overflow, QueueArgs, now_ms};
use crate::deadletter::Reason;
use crate::error::{CoreError, CoreResult};
use crate::message::{Message, Table, Value};
use crate::persist::{MemoryBudget, SharedPersistence, Stored, decode_message};
use crate::stream::{FILTER_VALUE_HEADER, StreamLog};
use crate::vhost::VHost;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};

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
    /// When it expires (ms since the epoch), from the queue's and the message's TTL.
    pub expires_at: Option<u64>,
    /// How many times it was requeued (for `x-delivery-limit`).
    pub delivery_count: u32,
}

/// Messages kept loaded at the head of a queue even when over the memory budget.
const KEEP_LOADED_AT_HEAD: usize = 64;

/// A ready message: loaded, or on disk only (`message` is None).
#[derive(Debug)]
struct Slot {
    seq: u64,
    redelivered: bool,
    stored: Option<Stored>,
    size: usize,
    priority: u8,
    expires_at: Option<u64>,
    delivery_count: u32,
    message: Option<Arc<Message>>,
    /// When it became ready (ms since the epoch), for the delivery latency.
    enqueued_at: u64,
}

impl Slot {
    fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|t| t < now)
    }
}

/// Ready messages by priority level (one level unless `x-max-priority`),
/// FIFO within a level, highest level first.
#[derive(Debug)]
struct Ready {
    levels: Vec<VecDeque<Slot>>,
    len: usize,
}

impl Ready {
    fn new(max_priority: Option<u8>) -> Self {
        Ready {
            levels: (0..=max_priority.unwrap_or(0))
                .map(|_| VecDeque::new())
                .collect(),
            len: 0,
        }
    }

    fn level(&self, priority: u8) -> usize {
        (priority as usize).min(self.levels.len() - 1)
    }

    fn push_back(&mut self, slot: Slot) {
        let l = self.level(slot.priority);
        self.levels[l].push_back(slot);
        self.len += 1;
    }

    fn insert_by_seq(&mut self, slot: Slot) {
        let l = self.level(slot.priority);
        let at = self.levels[l].partition_point(|s| s.seq < slot.seq);
        self.levels[l].insert(at, slot);
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(slot)
    }

    fn front(&self) -> Option<&Slot> {
        self.levels.iter().rev().find_map(VecDeque::front)
    }

    fn drain(&mut self) -> Vec<Slot> {
        self.len = 0;
        self.levels.iter_mut().flat_map(std::mem::take).collect()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
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
    /// Gives back a unit of credit reserved by [`ConsumerSink::try_reserve`]
    /// when there turned out to be nothing to deliver (every message expired).
    fn unreserve(&self);
}

/// How a consumer attaches (basic.consume's flags and arguments).
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumerOptions {
    /// Nobody else may consume while it is attached.
    pub exclusive: bool,
    /// Deliveries are settled when sent.
    pub no_ack: bool,
    /// `x-priority`: higher-priority consumers with credit are served first.
    pub priority: i32,
}

struct Consumer {
    tag: Arc<str>,
    owner: ConnectionId,
    channel: u16,
    options: ConsumerOptions,
    sink: Arc<dyn ConsumerSink>,
}

struct State {
    ready: Ready,
    ready_bytes: usize,
    unacked: usize,
    /// Sorted by priority, highest first; registration order within a priority.
    consumers: Vec<Consumer>,
    cursor: usize,
    next_seq: u64,
    had_consumer: bool,
    deleted: bool,
    paged: bool,
    last_used: u64,
    /// Messages given up on, dead-lettered once the lock is released.
    dead: Vec<(Arc<Message>, Reason)>,
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

/// What became of a published message in one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Enqueued (and maybe delivered already).
    Yes,
    /// Refused by `x-overflow = reject-publish(-dlx)`.
    Rejected,
}

/// A queue.
pub struct Queue {
    name: Arc<str>,
    vhost: Arc<str>,
    options: QueueOptions,
    args: QueueArgs,
    owner: Option<ConnectionId>,
    durability: Option<Durability>,
    home: Weak<VHost>,
    /// Set once a message with an expiry entered: the sweep then visits the queue.
    may_expire: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    counters: QueueCounters,
    /// The log of a stream queue (`x-queue-type: stream`), attached once at declaration.
    stream: std::sync::OnceLock<Arc<dyn StreamLog>>,
}

/// Running totals of what went through a queue (for metrics and the
/// management API's message stats).
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Messages accepted into the queue.
    pub published: std::sync::atomic::AtomicU64,
    /// Messages handed to consumers or `basic.get`.
    pub delivered: std::sync::atomic::AtomicU64,
    /// Of those, ones that had been delivered before.
    pub redelivered: std::sync::atomic::AtomicU64,
    /// Deliveries acknowledged.
    pub acked: std::sync::atomic::AtomicU64,
    /// Messages given up on without a dead-letter exchange (expiry, overflow).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Messages republished to the dead-letter exchange.
    pub dead_lettered: std::sync::atomic::AtomicU64,
}

/// Upper bounds (ms) of the [`DeliveryLatency`] buckets; a last one is +Inf.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// How long messages waited in queues between becoming ready (published,
/// or requeued) and being handed to a consumer or `basic.get`: a cumulative
/// histogram over every queue of the process, for metrics.
#[derive(Debug)]
pub struct DeliveryLatency {
    /// Observations at or below each bound of [`LATENCY_BUCKETS_MS`], then all.
    pub buckets: [std::sync::atomic::AtomicU64; 13],
    /// Sum of the observations in ms.
    pub sum_ms: std::sync::atomic::AtomicU64,
}

impl DeliveryLatency {
    fn observe(&self, ms: u64) {
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.buckets) {
            if ms <= *bound {
                bump(bucket, 1);
            }
        }
        bump(&self.buckets[12], 1);
        bump(&self.sum_ms, ms);
    }
}

/// The process-wide delivery latency histogram.
pub static DELIVERY_LATENCY: DeliveryLatency = DeliveryLatency {
    buckets: [const { std::sync::atomic::AtomicU64::new(0) }; 13],
    sum_ms: std::sync::atomic::AtomicU64::new(0),
};

fn bump(counter: &std::sync::atomic::AtomicU64, n: u64) {
    counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
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
    /// Creates an empty queue; `owner` is set for exclusive queues; `home` is
    /// the vhost dead letters are republished in.
    pub fn new(
        vhost: Arc<str>,
        name: Arc<str>,
        options: QueueOptions,
        args: QueueArgs,
        owner: Option<ConnectionId>,
        durability: Option<Durability>,
        home: Weak<VHost>,
    ) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(State {
                ready: Ready::new(args.max_priority),
                ready_bytes: 0,
                unacked: 0,
                consumers: Vec::new(),
                cursor: 0,
                next_seq: 0,
                had_consumer: false,
                deleted: false,
                paged: false,
                last_used: now_ms(),
                dead: Vec::new(),
            }),
            name,
            vhost,
            options,
            args,
            owner,
            durability,
            home,
            may_expire: std::sync::atomic::AtomicBool::new(false),
            counters: QueueCounters::default(),
            stream: std::sync::OnceLock::new(),
        })
    }

    /// True when the periodic sweep has work here (TTLs, `x-expires`, stream retention).
    pub fn needs_tick(&self) -> bool {
        self.args.expires.is_some()
            || self.may_expire.load(std::sync::atomic::Ordering::Relaxed)
            || self.args.stream.is_some_and(|s| s.max_age_ms.is_some())
    }

    /// Gives a stream queue its log (once; later calls are ignored).
    pub fn attach_stream(&self, log: Arc<dyn StreamLog>) {
        let _ = self.stream.set(log);
    }

    /// The log of a stream queue.
    pub fn stream(&self) -> Option<&Arc<dyn StreamLog>> {
        self.stream.get()
    }

    /// True for a stream queue (`x-queue-type: stream`).
    pub fn is_stream(&self) -> bool {
        self.args.stream.is_some()
    }

    /// Appends a message to the stream: encoded as the store encodes messages, with its
    /// `x-stream-filter-value` header as the record's filter value.
    fn append_to_stream(&self, log: &Arc<dyn StreamLog>, message: &Message) -> Accepted {
        let payload = crate::persist::encode_message(message);
        let filter = message
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get(FILTER_VALUE_HEADER))
            .and_then(Value::as_bytes);
        match log.append(now_ms() as i64, filter, &payload) {
            Some(_) => {
                bump(&self.counters.published, 1);
                Accepted::Yes
            }
            None => Accepted::Rejected,
        }
    }

    /// The store id of a durable queue backed by persistence.
    pub fn durable_id(&self) -> Option<u64> {
        self.durability.as_ref().and_then(|d| d.durable_id)
    }

    /// The queue's parsed arguments.
    pub fn args(&self) -> &QueueArgs {
        &self.args
    }

    /// The name of the vhost it belongs to.
    pub fn vhost_name(&self) -> &str {
        &self.vhost
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
        if let Some(log) = self.stream.get() {
            let s = log.stats();
            return QueueStats {
                ready: s.records as usize,
                ready_bytes: s.bytes as usize,
                unacked: 0,
                consumers: st.consumers.len(),
            };
        }
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

    /// Marks the queue used now (declare, get, consume), for `x-expires`.
    pub fn touch(&self) {
        self.state.lock().last_used = now_ms();
    }

    // ----- the store ---------------------------------------------------------

    /// The message left the queue for good: drop the store's copy.
    fn forget(&self, stored: Option<Stored>) {
        if let (Some(d), Some(s)) = (&self.durability, stored) {
            d.persistence.ack(s.queue, s.msg_id);
        }
    }

    /// The message is being handed out: record it so a restart flags it
    /// redelivered, or, for deliveries that need no ack, drop the store's copy.
    fn handed_out(&self, stored: Option<Stored>, redelivered: bool, no_ack: bool) {
        bump(&self.counters.delivered, 1);
        if redelivered {
            bump(&self.counters.redelivered, 1);
        }
        if let (Some(d), Some(s)) = (&self.durability, stored) {
            if no_ack {
                // Settled by `delivered_no_ack` once the delivery is really written.
            } else if !redelivered && Some(s.queue) == d.durable_id {
                d.persistence.delivered(s.queue, s.msg_id);
            }
        }
    }

    fn page_in(&self, stored: Stored) -> Option<Arc<Message>> {
        let d = self.durability.as_ref()?;
        let payload = stored.at.and_then(|at| d.persistence.read(at))?;
        decode_message(payload).ok().map(Arc::new)
    }

    /// The slot's message, read back from disk if it was paged out.
    fn load(&self, slot: &Slot) -> Option<Arc<Message>> {
        match &slot.message {
            Some(m) => Some(m.clone()),
            None => slot.stored.and_then(|s| self.page_in(s)),
        }
    }

    // ----- adding and taking -------------------------------------------------

    fn expiry_for(&self, message: &Message, now: u64) -> Option<u64> {
        let per_message = message
            .properties
            .expiration
            .as_ref()
            .and_then(|e| std::str::from_utf8(e).ok())
            .and_then(|e| e.parse::<u64>().ok());
        match (self.args.message_ttl, per_message) {
            (None, None) => None,
            (a, b) => Some(
                now + a
                    .unwrap_or(u64::MAX)
                    .min(b.unwrap_or(u64::MAX))
                    .min(u64::MAX / 4),
            ),
        }
    }

    /// Adds a slot at the tail, in memory or, over the budget, on disk only.
    fn push(&self, st: &mut State, entry: Entry) {
        let size = entry.message.size();
        st.ready_bytes += size;
        if entry.expires_at.is_some() {
            self.may_expire
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let priority = entry.message.properties.priority.unwrap_or(0);
        let mut slot = Slot {
            seq: entry.seq,
            redelivered: entry.redelivered,
            stored: entry.stored,
            size,
            priority,
            expires_at: entry.expires_at,
            delivery_count: entry.delivery_count,
            message: None,
            enqueued_at: now_ms(),
        };
        if let Some(d) = &self.durability {
            d.budget.entries_added(1);
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
                    st.paged |= stored.queue == d.scratch_id;
                    slot.stored = Some(stored);
                    st.ready.push_back(slot);
                    return;
                }
            }
            d.budget.take(size);
        }
        slot.message = Some(entry.message);
        st.ready.push_back(slot);
    }

    /// Removes the head slot, returning its bytes to the budget.
    fn take_head(&self, st: &mut State) -> Option<Slot> {
        let slot = st.ready.pop_front()?;
        st.ready_bytes -= slot.size;
        if let Some(d) = &self.durability {
            d.budget.entries_removed(1);
            if slot.message.is_some() {
                d.budget.release(slot.size);
            }
        }
        Some(slot)
    }

    /// Drops a message the queue gives up on: dead-letters it when the queue
    /// has a dead-letter exchange, and removes the store's copy.
    fn give_up(&self, st: &mut State, slot: Slot, reason: Reason) {
        if self.args.dead_letter_exchange.is_some()
            && let Some(m) = self.load(&slot)
        {
            st.dead.push((m, reason));
        } else {
            bump(&self.counters.dropped, 1);
        }
        self.forget(slot.stored);
    }

    /// Takes the next deliverable message: expired ones are given up on, and a
    /// paged message that cannot be read is reported and dropped.
    fn pop(&self, st: &mut State, now: u64) -> Option<Entry> {
        loop {
            let slot = self.take_head(st)?;
            if slot.expired(now) {
                self.give_up(st, slot, Reason::Expired);
                continue;
            }
            let Some(mut message) = self.load(&slot) else {
                self.forget(slot.stored);
                continue;
            };
            if slot.delivery_count > 0 {
                message = with_header(
                    &message,
                    "x-delivery-count",
                    Value::I64(slot.delivery_count as i64),
                );
            }
            DELIVERY_LATENCY.observe(now.saturating_sub(slot.enqueued_at));
            return Some(Entry {
                seq: slot.seq,
                message,
                redelivered: slot.redelivered,
                stored: slot.stored,
                expires_at: slot.expires_at,
                delivery_count: slot.delivery_count,
            });
        }
    }

    /// Enforces `x-max-length` / `x-max-length-bytes` after a push (drop-head).
    fn trim(&self, st: &mut State) {
        let over = |st: &State| {
            self.args
                .max_length
                .is_some_and(|m| st.ready.len() as u64 > m)
                || self
                    .args
                    .max_length_bytes
                    .is_some_and(|m| st.ready_bytes as u64 > m)
        };
        while over(st) {
            let Some(slot) = self.take_head(st) else {
                break;
            };
            self.give_up(st, slot, Reason::MaxLen);
        }
    }

    /// Would a message of `size` bytes be refused by `reject-publish(-dlx)`?
    fn refuses(&self, st: &State, size: usize) -> bool {
        self.args.overflow != Overflow::DropHead
            && (self
                .args
                .max_length
                .is_some_and(|m| st.ready.len() as u64 >= m)
                || self
                    .args
                    .max_length_bytes
                    .is_some_and(|m| (st.ready_bytes + size) as u64 > m))
    }

    /// True when the queue would refuse a publish of `size` bytes right now,
    /// so the caller can leave it out before writing to the store.
    pub fn would_refuse(&self, size: usize) -> bool {
        self.refuses(&self.state.lock(), size)
    }

    /// Appends a routed message and feeds consumers. `stored` is the store's
    /// copy when the message was persisted for this queue.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>, stored: Option<Stored>) -> Accepted {
        if let Some(log) = self.stream.get() {
            self.forget(stored);
            return self.append_to_stream(log, &message);
        }
        let mut st = self.state.lock();
        if st.deleted {
            self.forget(stored);
            return Accepted::Yes;
        }
        if self.refuses(&st, message.size()) {
            self.forget(stored);
            if self.args.overflow == Overflow::RejectPublishDlx
                && self.args.dead_letter_exchange.is_some()
            {
                st.dead.push((message, Reason::MaxLen));
            }
            self.unlock_and_flush(st);
            return Accepted::Rejected;
        }
        // A persistent message a durable queue accepts must be in the store even
        // if the caller skipped this queue (it looked full when checked).
        let stored = match (stored, &self.durability) {
            (None, Some(d)) if message.properties.is_persistent() && d.durable_id.is_some() => {
                let queue = d.durable_id.unwrap_or(d.scratch_id);
                let msg_id = d.persistence.next_msg_id();
                d.persistence
                    .publish(msg_id, &[queue], &message)
                    .map(|at| Stored {
                        queue,
                        msg_id,
                        at: Some(at),
                    })
            }
            (s, _) => s,
        };
        let now = now_ms();
        let seq = st.next_seq;
        st.next_seq += 1;
        let expires_at = self.expiry_for(&message, now);
        self.push(
            &mut st,
            Entry {
                seq,
                message,
                redelivered: false,
                stored,
                expires_at,
                delivery_count: 0,
            },
        );
        bump(&self.counters.published, 1);
        self.trim(&mut st);
        self.dispatch_locked(&mut st, now);
        self.unlock_and_flush(st);
        Accepted::Yes
    }

    /// Puts recovered messages back (in their log order) after a restart.
    pub fn restore(&self, messages: impl IntoIterator<Item = (Arc<Message>, Stored, bool)>) {
        let mut st = self.state.lock();
        let now = now_ms();
        for (message, stored, redelivered) in messages {
            let seq = st.next_seq;
            st.next_seq += 1;
            let expires_at = self.expiry_for(&message, now);
            self.push(
                &mut st,
                Entry {
                    seq,
                    message,
                    redelivered,
                    stored: Some(stored),
                    expires_at,
                    delivery_count: 0,
                },
            );
        }
    }

    /// Feeds consumers that have credit; call after credit comes back.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch_locked(&mut st, now_ms());
        self.unlock_and_flush(st);
    }

    /// The consumer to serve next: the highest priority group with credit,
    /// round-robin within it; with single active consumer only the first.
    fn pick_consumer(&self, st: &mut State) -> Option<usize> {
        let n = st.consumers.len();
        if self.args.single_active_consumer {
            return (n > 0 && st.consumers[0].sink.try_reserve()).then_some(0);
        }
        let mut start = 0;
        while start < n {
            let p = st.consumers[start].options.priority;
            let end = start
                + st.consumers[start..]
                    .iter()
                    .take_while(|c| c.options.priority == p)
                    .count();
            let len = end - start;
            for k in 0..len {
                let i = start + (st.cursor + k) % len;
                if st.consumers[i].sink.try_reserve() {
                    st.cursor = (st.cursor + k + 1) % len.max(1);
                    return Some(i);
                }
            }
            start = end;
        }
        None
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut State, now: u64) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(idx) = self.pick_consumer(st) else {
                return;
            };
            let Some(entry) = self.pop(st, now) else {
                st.consumers[idx].sink.unreserve();
                return;
            };
            let consumer = &st.consumers[idx];
            let sink = consumer.sink.clone();
            let counted = !consumer.options.no_ack;
            let (stored, redelivered) = (entry.stored, entry.redelivered);
            if counted {
                st.unacked += 1;
            }
            match sink.deliver(Delivery {
                queue: self.clone(),
                entry,
            }) {
                Ok(()) => self.handed_out(stored, redelivered, !counted),
                Err(back) => {
                    if counted {
                        st.unacked -= 1;
                    }
                    self.put_back(st, back.entry);
                    st.consumers.remove(idx);
                    st.cursor = 0;
                }
            }
        }
    }

    /// Puts an entry back at its place, loaded.
    fn put_back(&self, st: &mut State, entry: Entry) {
        let size = entry.message.size();
        st.ready_bytes += size;
        if let Some(d) = &self.durability {
            d.budget.take(size);
            d.budget.entries_added(1);
        }
        let priority = entry.message.properties.priority.unwrap_or(0);
        st.ready.insert_by_seq(Slot {
            seq: entry.seq,
            redelivered: entry.redelivered,
            stored: entry.stored,
            size,
            priority,
            expires_at: entry.expires_at,
            delivery_count: entry.delivery_count,
            message: Some(entry.message),
            enqueued_at: now_ms(),
        });
    }

    /// basic.get: takes the head message, and reports how many remain.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(Entry, usize)> {
        let mut st = self.state.lock();
        if st.deleted || self.is_stream() {
            return None;
        }
        st.last_used = now_ms();
        let entry = self.pop(&mut st, now_ms());
        if let Some(e) = &entry {
            self.handed_out(e.stored, e.redelivered, no_ack);
            if no_ack {
                // basic.get-ok is written right away: the message is gone.
                self.forget(e.stored);
            }
            if !no_ack {
                st.unacked += 1;
            }
        }
        let left = st.ready.len();
        self.unlock_and_flush(st);
        entry.map(|e| (e, left))
    }

    /// A no-ack delivery was written to its consumer: drop the store's copy.
    pub fn delivered_no_ack(&self, entry: &Entry) {
        self.forget(entry.stored);
    }

    /// Takes back deliveries that never reached their consumer (cancelled or
    /// gone before they were written): they return to their place unchanged,
    /// not flagged redelivered and not counted against a delivery limit.
    /// `counted` says whether they were counted as unacked.
    pub fn return_undelivered(self: &Arc<Self>, entries: Vec<Entry>, counted: bool) {
        if entries.is_empty() || self.is_stream() {
            return;
        }
        let mut st = self.state.lock();
        if counted {
            st.unacked = st.unacked.saturating_sub(entries.len());
        }
        if st.deleted {
            for e in &entries {
                self.forget(e.stored);
            }
            return;
        }
        for entry in entries {
            self.put_back(&mut st, entry);
        }
        self.dispatch_locked(&mut st, now_ms());
        self.unlock_and_flush(st);
    }

    /// Settles a delivery as acknowledged: it leaves the queue for good.
    pub fn settle(&self, entry: &Entry) {
        bump(&self.counters.acked, 1);
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(1);
        if !st.deleted {
            self.forget(entry.stored);
        }
    }

    /// basic.reject / nack without requeue: dead-lettered (reason `rejected`)
    /// when the queue has a dead-letter exchange, else dropped.
    pub fn reject(self: &Arc<Self>, entry: Entry) {
        let mut st = self.state.lock();
        st.unacked = st.unacked.saturating_sub(1);
        // A stream keeps its records: a reject only returns credit.
        if st.deleted || self.is_stream() {
            return;
        }
        if self.args.dead_letter_exchange.is_some() {
            st.dead.push((entry.message.clone(), Reason::Rejected));
        }
        self.forget(entry.stored);
        self.unlock_and_flush(st);
    }

    /// Puts unacknowledged deliveries back in their original places, flagged
    /// redelivered, and feeds consumers. A message requeued more often than
    /// `x-delivery-limit` is dead-lettered (or dropped) instead.
    pub fn requeue(self: &Arc<Self>, mut entries: Vec<Entry>) {
        if entries.is_empty() || self.is_stream() {
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
            entry.delivery_count += 1;
            if self
                .args
                .delivery_limit
                .is_some_and(|l| entry.delivery_count as u64 > l)
            {
                if self.args.dead_letter_exchange.is_some() {
                    st.dead.push((entry.message.clone(), Reason::DeliveryLimit));
                }
                self.forget(entry.stored);
                continue;
            }
            self.put_back(&mut st, entry);
        }
        self.dispatch_locked(&mut st, now_ms());
        self.unlock_and_flush(st);
    }

    /// Drops every ready message; returns how many.
    pub fn purge(&self) -> usize {
        let mut st = self.state.lock();
        let n = st.ready.len();
        for slot in st.ready.drain() {
            if let Some(d) = &self.durability {
                d.budget.entries_removed(1);
                if slot.message.is_some() {
                    d.budget.release(slot.size);
                }
            }
            self.forget(slot.stored);
        }
        st.ready_bytes = 0;
        n
    }

    /// The periodic sweep: expires messages at the head (even with no
    /// consumer) and reports whether `x-expires` says the queue must go.
    pub fn tick(self: &Arc<Self>, now: u64) -> bool {
        if let Some(log) = self.stream.get() {
            log.tick(now);
        }
        let mut st = self.state.lock();
        if st.deleted {
            return false;
        }
        while st.ready.front().is_some_and(|s| s.expired(now)) {
            if let Some(slot) = self.take_head(&mut st) {
                self.give_up(&mut st, slot, Reason::Expired);
            }
        }
        let unused = self
            .args
            .expires
            .is_some_and(|ms| st.consumers.is_empty() && now.saturating_sub(st.last_used) > ms);
        self.unlock_and_flush(st);
        unused
    }

    /// Releases the lock, then republishes what the queue dead-lettered.
    fn unlock_and_flush(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if st.dead.is_empty() {
            return;
        }
        let dead = std::mem::take(&mut st.dead);
        drop(st);
        bump(&self.counters.dead_lettered, dead.len() as u64);
        let Some(vhost) = self.home.upgrade() else {
            return;
        };
        let (Some(dlx), now) = (self.args.dead_letter_exchange.as_deref(), now_ms()) else {
            return;
        };
        for (message, reason) in dead {
            vhost.dead_letter(
                &message,
                self.name(),
                reason,
                dlx,
                self.args.dead_letter_routing_key.as_deref(),
                now,
            );
        }
    }

    // ----- consumers ---------------------------------------------------------

    /// Attaches a consumer. Exclusive consumers need an idle queue, and an
    /// exclusive consumer keeps everyone else out (403, as RabbitMQ).
    pub fn add_consumer(
        self: &Arc<Self>,
        tag: Arc<str>,
        owner: ConnectionId,
        channel: u16,
        options: ConsumerOptions,
        sink: Arc<dyn ConsumerSink>,
    ) -> CoreResult<()> {
        let mut st = self.state.lock();
        if st.deleted {
            return Err(CoreError::NotFound(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )));
        }
        if st.consumers.iter().any(|c| c.options.exclusive)
            || (options.exclusive && !st.consumers.is_empty())
        {
            return Err(CoreError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        // With a single active consumer the active one stays first (registration
        // order, as RabbitMQ's classic queues do); otherwise highest priority first.
        let at = if self.args.single_active_consumer {
            st.consumers.len()
        } else {
            st.consumers
                .partition_point(|c| c.options.priority >= options.priority)
        };
        st.consumers.insert(
            at,
            Consumer {
                tag,
                owner,
                channel,
                options,
                sink,
            },
        );
        st.had_consumer = true;
        st.last_used = now_ms();
        self.dispatch_locked(&mut st, now_ms());
        self.unlock_and_flush(st);
        Ok(())
    }

    /// Detaches a consumer. Returns true when an auto-delete queue just lost
    /// its last consumer and must now be deleted by its vhost.
    pub fn remove_consumer(self: &Arc<Self>, owner: ConnectionId, channel: u16, tag: &str) -> bool {
        let mut st = self.state.lock();
        st.consumers
            .retain(|c| !(c.owner == owner && c.channel == channel && &*c.tag == tag));
        if st.cursor >= st.consumers.len() {
            st.cursor = 0;
        }
        st.last_used = now_ms();
        let gone =
            self.options.auto_delete && st.had_consumer && st.consumers.is_empty() && !st.deleted;
        // With a single active consumer, the next one takes over now.
        self.dispatch_locked(&mut st, now_ms());
        self.unlock_and_flush(st);
        gone
    }

    /// Marks the queue deleted, drops its messages and tells consumers.
    /// Returns the number of ready messages it held.
    pub(crate) fn mark_deleted(&self) -> usize {
        let (n, sinks, paged) = {
            let mut st = self.state.lock();
            st.deleted = true;
            let n = st.ready.len();
            for slot in st.ready.drain() {
                if let Some(d) = &self.durability {
                    d.budget.entries_removed(1);
                    if slot.message.is_some() {
                        d.budget.release(slot.size);
                    }
                }
            }
            st.ready_bytes = 0;
            let sinks: Vec<_> = st.consumers.drain(..).map(|c| c.sink).collect();
            (n, sinks, st.paged)
        };
        if let Some(log) = self.stream.get() {
            log.destroy();
        }
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

    /// Checks the delete preconditions (if-unused, if-empty).
    pub fn check_delete(&self, if_unused: bool, if_empty: bool) -> CoreResult<()> {
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

    /// Running totals of what went through the queue.
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    /// The attached consumers, for listings: (tag, owning connection,
    /// channel, options), highest priority first.
    pub fn consumers(&self) -> Vec<(Arc<str>, ConnectionId, u16, ConsumerOptions)> {
        self.state
            .lock()
            .consumers
            .iter()
            .map(|c| (c.tag.clone(), c.owner, c.channel, c.options))
            .collect()
    }
}

/// A copy of `message` with one header set.
fn with_header(message: &Message, key: &str, value: Value) -> Arc<Message> {
    let mut properties = message.properties.clone();
    properties
        .headers
        .get_or_insert_with(Table::default)
        .insert(key, value);
    message.with_properties(properties)
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
        fn unreserve(&self) {
            self.credit.fetch_add(1, Ordering::SeqCst);
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
        Queue::new(
            "/".into(),
            "q".into(),
            QueueOptions::default(),
            QueueArgs::default(),
            None,
            None,
            Weak::new(),
        )
    }

    #[test]
    fn credit_limits_deliveries_and_dispatch_resumes() {
        let q = queue();
        let s = sink(2);
        q.add_consumer(
            "c".into(),
            1,
            1,
            ConsumerOptions {
                exclusive: false,
                no_ack: false,
                priority: 0,
            },
            s.clone(),
        )
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
        q.add_consumer(
            "a".into(),
            1,
            1,
            ConsumerOptions {
                exclusive: false,
                no_ack: false,
                priority: 0,
            },
            a.clone(),
        )
        .unwrap();
        q.add_consumer(
            "b".into(),
            1,
            1,
            ConsumerOptions {
                exclusive: false,
                no_ack: false,
                priority: 0,
            },
            b.clone(),
        )
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
        q.add_consumer(
            "a".into(),
            1,
            1,
            ConsumerOptions {
                exclusive: true,
                no_ack: false,
                priority: 0,
            },
            sink(1),
        )
        .unwrap();
        let err = q
            .add_consumer(
                "b".into(),
                2,
                1,
                ConsumerOptions {
                    exclusive: false,
                    no_ack: false,
                    priority: 0,
                },
                sink(1),
            )
            .unwrap_err();
        assert!(matches!(err, CoreError::AccessRefused(_)));
    }

    #[test]
    fn deletion_cancels_consumers() {
        let q = queue();
        let s = sink(1);
        q.add_consumer(
            "a".into(),
            1,
            1,
            ConsumerOptions {
                exclusive: false,
                no_ack: false,
                priority: 0,
            },
            s.clone(),
        )
        .unwrap();
        q.mark_deleted();
        assert_eq!(s.cancelled.load(Ordering::SeqCst), 1);
        assert!(q.is_deleted());
    }

    #[test]
    fn single_active_consumer_keeps_the_first_even_against_a_higher_priority() {
        let args = QueueArgs {
            single_active_consumer: true,
            ..Default::default()
        };
        let q = Queue::new(
            "/".into(),
            "sac".into(),
            QueueOptions::default(),
            args,
            None,
            None,
            Weak::new(),
        );
        let (a, b) = (sink(10), sink(10));
        q.add_consumer("a".into(), 1, 1, ConsumerOptions::default(), a.clone())
            .unwrap();
        let high = ConsumerOptions {
            priority: 10,
            ..Default::default()
        };
        q.add_consumer("b".into(), 1, 1, high, b.clone()).unwrap();
        for _ in 0..3 {
            q.publish(msg("x"), None);
        }
        assert_eq!((a.got.lock().len(), b.got.lock().len()), (3, 0));
        q.remove_consumer(1, 1, "a");
        q.publish(msg("y"), None);
        assert_eq!(b.got.lock().len(), 1, "the next consumer takes over");
    }

    #[test]
    fn undelivered_entries_return_unchanged() {
        let q = queue();
        q.publish(msg("1"), None);
        let (e, _) = q.get(false).unwrap();
        q.return_undelivered(vec![e], true);
        let (again, _) = q.get(true).unwrap();
        assert!(!again.redelivered);
        assert_eq!(again.delivery_count, 0);
        assert_eq!(q.stats().unacked, 0);
    }
}
