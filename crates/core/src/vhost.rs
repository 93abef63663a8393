//! A virtual host: its own namespace of exchanges and queues, and routing.

use crate::args::QueueArgs;
use crate::deadletter::{Reason, dead_lettered, is_cycle};
use crate::delayed::{Held, Waiting, recorded_fire_at, requested_delay, with_fire_at};
use crate::error::{CoreError, CoreResult};
use crate::exchange::{Binding, Destination, Exchange, ExchangeKind, ExchangeOptions};
use crate::message::{Message, Properties, Table, Value};
use crate::persist::{BindingDef, ExchangeDef, MemoryBudget, QueueDef, SharedPersistence, Stored};
use crate::queue::{Accepted, ConnectionId, Durability, Queue, QueueOptions};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Weak;

/// How deep exchange-to-exchange bindings are followed before giving up on a cycle.
const MAX_EXCHANGE_HOPS: usize = 32;

/// Result of a queue declaration.
#[derive(Debug, Clone)]
pub struct DeclaredQueue {
    /// The queue.
    pub queue: Arc<Queue>,
    /// Ready messages.
    pub message_count: u32,
    /// Attached consumers.
    pub consumer_count: u32,
}

/// A virtual host.
pub struct VHost {
    name: Arc<str>,
    exchanges: RwLock<HashMap<Arc<str>, Arc<Exchange>>>,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    persistence: Option<SharedPersistence>,
    budget: Arc<MemoryBudget>,
    myself: Weak<VHost>,
    waiting: parking_lot::Mutex<Waiting>,
    /// Store ids for delayed messages: durable (a definition) and scratch.
    delay_ids: parking_lot::Mutex<(Option<u64>, Option<u64>)>,
    /// Most queues this vhost may hold (RabbitMQ's `max-queues`); 0 = no limit.
    max_queues: std::sync::atomic::AtomicUsize,
    /// Set once the vhost is deleted: its connections must close.
    deleted: std::sync::atomic::AtomicBool,
    /// An id the owner of the vhost list gives this incarnation, to tell it
    /// from a vhost of the same name deleted and created again.
    incarnation: std::sync::atomic::AtomicU64,
}

/// What became of a message handed to [`VHost::enqueue`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Enqueued {
    /// It was written to the store: confirm only once that is durable.
    pub on_disk: bool,
    /// A queue refused it (`x-overflow = reject-publish`): nack it.
    pub rejected: bool,
}

/// What a publish reached.
#[derive(Debug, Default)]
pub struct Routed {
    /// The distinct queues the message was routed to.
    pub queues: Vec<Arc<Queue>>,
}

fn inequivalent(
    what: &str,
    arg: &str,
    name: &str,
    vhost: &str,
    received: impl std::fmt::Display,
    current: impl std::fmt::Display,
) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "inequivalent arg '{arg}' for {what} '{name}' in vhost '{vhost}': received '{received}' but current is '{current}'"
    ))
}

fn reserved(what: &str, name: &str) -> CoreError {
    CoreError::AccessRefused(format!(
        "{what} name '{name}' contains reserved prefix 'amq.*'"
    ))
}

impl VHost {
    /// A vhost with the standard exchanges (the default one and `amq.*`).
    pub fn new(
        name: &str,
        persistence: Option<SharedPersistence>,
        budget: Arc<MemoryBudget>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|myself| {
            let vhost = VHost {
                name: name.into(),
                exchanges: RwLock::new(HashMap::new()),
                queues: RwLock::new(HashMap::new()),
                persistence,
                budget,
                myself: myself.clone(),
                waiting: parking_lot::Mutex::new(Waiting::default()),
                delay_ids: parking_lot::Mutex::new((None, None)),
                max_queues: std::sync::atomic::AtomicUsize::new(0),
                deleted: std::sync::atomic::AtomicBool::new(false),
                incarnation: std::sync::atomic::AtomicU64::new(0),
            };
            {
                let mut ex = vhost.exchanges.write();
                for (n, kind) in [
                    ("", ExchangeKind::Direct),
                    ("amq.direct", ExchangeKind::Direct),
                    ("amq.fanout", ExchangeKind::Fanout),
                    ("amq.topic", ExchangeKind::Topic),
                    ("amq.headers", ExchangeKind::Headers),
                    ("amq.match", ExchangeKind::Headers),
                ] {
                    let name: Arc<str> = n.into();
                    let options = ExchangeOptions {
                        delayed: false,
                        kind,
                        durable: true,
                        auto_delete: false,
                        internal: false,
                        arguments: Table::default(),
                    };
                    ex.insert(name.clone(), Exchange::new(name, options));
                }
            }
            vhost
        })
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn no_exchange(&self, name: &str) -> CoreError {
        CoreError::NotFound(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> CoreError {
        CoreError::NotFound(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn default_exchange_refused() -> CoreError {
        CoreError::AccessRefused("operation not permitted on the default exchange".into())
    }

    /// Looks an exchange up.
    pub fn exchange(&self, name: &str) -> CoreResult<Arc<Exchange>> {
        self.exchanges
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_exchange(name))
    }

    /// Looks a queue up, checking exclusive ownership.
    pub fn queue(&self, name: &str, conn: ConnectionId) -> CoreResult<Arc<Queue>> {
        let q = self
            .queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| self.no_queue(name))?;
        q.check_access(conn)?;
        Ok(q)
    }

    /// All exchanges, for listings.
    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.read().values().cloned().collect()
    }

    /// All queues, for listings.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.read().values().cloned().collect()
    }

    /// exchange.declare (passive or not).
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        options: impl FnOnce(ExchangeKind) -> ExchangeOptions,
    ) -> CoreResult<Arc<Exchange>> {
        if name.is_empty() {
            return if passive {
                self.exchange(name)
            } else {
                Err(Self::default_exchange_refused())
            };
        }
        if passive {
            return self.exchange(name);
        }
        if name.starts_with("amq.") {
            return Err(reserved("exchange", name));
        }
        let options = if kind == "x-delayed-message" {
            let mut o = options(ExchangeKind::Direct);
            let inner = o
                .arguments
                .get("x-delayed-type")
                .and_then(Value::as_str)
                .and_then(ExchangeKind::parse);
            let Some(inner) = inner else {
                return Err(CoreError::PreconditionFailed(
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
                ));
            };
            o.kind = inner;
            o.delayed = true;
            o
        } else {
            let kind = ExchangeKind::parse(kind).ok_or_else(|| {
                CoreError::CommandInvalid(format!("unknown exchange type '{kind}'"))
            })?;
            options(kind)
        };
        let mut exchanges = self.exchanges.write();
        if let Some(existing) = exchanges.get(name) {
            let cur = existing.options();
            let field = if cur.kind != options.kind || cur.delayed != options.delayed {
                Some((
                    "type",
                    options.type_name().to_string(),
                    cur.type_name().to_string(),
                ))
            } else if cur.durable != options.durable {
                Some((
                    "durable",
                    options.durable.to_string(),
                    cur.durable.to_string(),
                ))
            } else if cur.auto_delete != options.auto_delete {
                Some((
                    "auto_delete",
                    options.auto_delete.to_string(),
                    cur.auto_delete.to_string(),
                ))
            } else if cur.internal != options.internal {
                Some((
                    "internal",
                    options.internal.to_string(),
                    cur.internal.to_string(),
                ))
            } else {
                None
            };
            if let Some((arg, received, current)) = field {
                return Err(inequivalent(
                    "exchange", arg, name, &self.name, received, current,
                ));
            }
            return Ok(existing.clone());
        }
        let name: Arc<str> = name.into();
        let exchange = Exchange::new(name.clone(), options);
        exchanges.insert(name, exchange.clone());
        drop(exchanges);
        self.persist_exchange(&exchange);
        Ok(exchange)
    }

    /// Re-creates a durable exchange from the store at start-up.
    pub fn restore_exchange(&self, def: ExchangeDef) {
        let name: Arc<str> = def.name.into();
        self.exchanges
            .write()
            .insert(name.clone(), Exchange::new(name, def.options));
    }

    /// Re-creates a durable queue from the store at start-up.
    pub fn restore_queue(&self, def: QueueDef) -> Arc<Queue> {
        let name: Arc<str> = def.name.into();
        let durability = self.durability(Some(def.id));
        let args = QueueArgs::parse(&def.options.arguments, &name, &self.name).unwrap_or_default();
        let queue = Queue::new(
            self.name.clone(),
            name.clone(),
            def.options,
            args,
            None,
            durability,
            self.myself.clone(),
        );
        if let Some(settings) = queue.args().stream {
            // The persistence logs why a log cannot be opened; the queue then keeps
            // new records in memory and leaves the files alone for the next start.
            let log = self
                .open_stream(Some(def.id), &settings, &name)
                .unwrap_or_else(|_| Arc::new(crate::stream::MemoryStream::default()));
            queue.attach_stream(log);
        }
        self.queues.write().insert(name, queue.clone());
        queue
    }

    /// The log of a new or restored stream queue: in the store when there is one, else in
    /// memory.
    fn open_stream(
        &self,
        durable_id: Option<u64>,
        settings: &crate::stream::StreamSettings,
        name: &str,
    ) -> CoreResult<Arc<dyn crate::stream::StreamLog>> {
        match (&self.persistence, durable_id) {
            (Some(p), Some(id)) => {
                p.open_stream(self.incarnation(), id, settings)
                    .ok_or_else(|| {
                        CoreError::PreconditionFailed(format!(
                            "cannot open the log of stream queue '{name}' in vhost '{}'",
                            self.name
                        ))
                    })
            }
            _ => Ok(Arc::new(crate::stream::MemoryStream::default())),
        }
    }

    /// Re-creates a durable binding from the store at start-up; false when an end is missing.
    pub fn restore_binding(&self, def: BindingDef) -> bool {
        let Ok(source) = self.exchange(&def.source) else {
            return false;
        };
        let destination = if def.to_exchange {
            match self.exchange(&def.destination) {
                Ok(d) => Destination::Exchange(d.name().into()),
                Err(_) => return false,
            }
        } else {
            match self.queues.read().get(def.destination.as_str()) {
                Some(q) => Destination::Queue(q.clone()),
                None => return false,
            }
        };
        source.bind(Binding {
            destination,
            key: def.key,
            arguments: def.arguments,
        });
        true
    }

    /// The store link of a new queue (None without persistence).
    fn durability(&self, durable_id: Option<u64>) -> Option<Durability> {
        let p = self.persistence.as_ref()?;
        Some(Durability {
            durable_id,
            scratch_id: p.next_queue_id(),
            persistence: p.clone(),
            budget: self.budget.clone(),
        })
    }

    fn persist_exchange(&self, x: &Exchange) {
        if let Some(p) = &self.persistence
            && x.options().durable
        {
            let def = ExchangeDef {
                vhost: self.name.to_string(),
                name: x.name().to_string(),
                options: x.options().clone(),
            };
            p.put_definition(
                "exchange",
                &ExchangeDef::key(&self.name, x.name()),
                &def.encode(),
            );
        }
    }

    fn unpersist_exchange(&self, x: &Exchange) {
        if let Some(p) = &self.persistence
            && x.options().durable
        {
            p.delete_definition("exchange", &ExchangeDef::key(&self.name, x.name()));
        }
    }

    /// The stored form of a binding, when both ends are durable.
    fn binding_def(
        &self,
        source: &Exchange,
        binding: &Binding,
        destination_durable: bool,
    ) -> Option<BindingDef> {
        self.persistence.as_ref()?;
        if !source.options().durable || !destination_durable {
            return None;
        }
        let (to_exchange, destination) = match &binding.destination {
            Destination::Queue(q) => (false, q.name().to_string()),
            Destination::Exchange(n) => (true, n.to_string()),
        };
        Some(BindingDef {
            vhost: self.name.to_string(),
            source: source.name().to_string(),
            to_exchange,
            destination,
            key: binding.key.clone(),
            arguments: binding.arguments.clone(),
        })
    }

    fn destination_durable(&self, d: &Destination) -> bool {
        match d {
            Destination::Queue(q) => q.durable_id().is_some(),
            Destination::Exchange(n) => self
                .exchanges
                .read()
                .get(n)
                .is_some_and(|x| x.options().durable),
        }
    }

    fn bind_persisted(&self, source: &Exchange, binding: Binding) {
        let durable = self.destination_durable(&binding.destination);
        let def = self.binding_def(source, &binding, durable);
        if source.bind(binding)
            && let (Some(def), Some(p)) = (def, &self.persistence)
        {
            p.put_definition("binding", &def.key(), &def.encode());
        }
    }

    /// Removes bindings and their stored forms; true when any was removed.
    fn unbind_persisted(
        &self,
        source: &Exchange,
        bindings: &[Binding],
        destination_durable: bool,
    ) -> bool {
        let mut any = false;
        for b in bindings {
            if source.unbind(b) {
                any = true;
                if let (Some(def), Some(p)) = (
                    self.binding_def(source, b, destination_durable),
                    &self.persistence,
                ) {
                    p.delete_definition("binding", &def.key());
                }
            }
        }
        any
    }

    /// Removes every binding from any exchange to `destination`.
    fn unbind_everywhere(&self, destination: &Destination, destination_durable: bool) {
        for exchange in self.exchanges() {
            let doomed: Vec<Binding> = exchange
                .bindings()
                .into_iter()
                .filter(|b| b.destination == *destination)
                .collect();
            if !doomed.is_empty() && self.unbind_persisted(&exchange, &doomed, destination_durable)
            {
                self.auto_delete_exchange(&exchange);
            }
        }
    }

    /// exchange.delete.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> CoreResult<()> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(reserved("exchange", name));
        }
        // Check if-unused before taking the map's write lock (bindings are
        // never locked while the map is held for writing).
        let Some(exchange) = self.exchanges.read().get(name).cloned() else {
            return Ok(());
        };
        if if_unused && exchange.has_bindings() {
            return Err(CoreError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        {
            let mut exchanges = self.exchanges.write();
            match exchanges.get(name) {
                Some(x) if Arc::ptr_eq(x, &exchange) => {
                    exchanges.remove(name);
                }
                _ => return Ok(()),
            }
        }
        self.unpersist_exchange(&exchange);
        let own: Vec<Binding> = exchange.bindings();
        for b in &own {
            let durable = self.destination_durable(&b.destination);
            self.unbind_persisted(&exchange, std::slice::from_ref(b), durable);
        }
        let dest = Destination::Exchange(exchange.name().into());
        self.unbind_everywhere(&dest, exchange.options().durable);
        Ok(())
    }

    fn auto_delete_exchange(&self, exchange: &Arc<Exchange>) {
        if exchange.options().auto_delete && !exchange.has_bindings() {
            let mut exchanges = self.exchanges.write();
            if exchanges
                .get(exchange.name())
                .is_some_and(|e| Arc::ptr_eq(e, exchange))
            {
                exchanges.remove(exchange.name());
                drop(exchanges);
                self.unpersist_exchange(exchange);
            }
        }
    }

    /// Sets the most queues this vhost may hold (0 = no limit); queues it
    /// already holds stay, new declarations past the limit are refused with
    /// 406 PRECONDITION_FAILED as in RabbitMQ.
    pub fn set_max_queues(&self, max: usize) {
        self.max_queues
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// The queue limit (0 = none).
    pub fn max_queues(&self) -> usize {
        self.max_queues.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// queue.declare. An empty name gets a server-generated `amq.gen-` name.
    pub fn declare_queue(
        &self,
        name: &str,
        passive: bool,
        options: QueueOptions,
        conn: ConnectionId,
    ) -> CoreResult<DeclaredQueue> {
        let declared = |queue: Arc<Queue>| {
            let stats = queue.stats();
            DeclaredQueue {
                queue,
                message_count: stats.ready as u32,
                consumer_count: stats.consumers as u32,
            }
        };
        if passive {
            // A passive declare only looks: it does not renew an `x-expires` lease.
            return self.queue(name, conn).map(declared);
        }
        if name.starts_with("amq.") {
            return Err(reserved("queue", name));
        }
        let name: Arc<str> = if name.is_empty() {
            crate::naming::unique_name("amq.gen-").into()
        } else {
            name.into()
        };
        let args = QueueArgs::parse(&options.arguments, &name, &self.name)?;
        if args.stream.is_some() {
            check_stream_properties(&options, &name, &self.name)?;
        }
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(&name) {
            existing.check_access(conn)?;
            let cur = existing.options();
            let field = if cur.durable != options.durable {
                Some(("durable", options.durable, cur.durable))
            } else if cur.auto_delete != options.auto_delete {
                Some(("auto_delete", options.auto_delete, cur.auto_delete))
            } else if cur.exclusive != options.exclusive {
                Some(("exclusive", options.exclusive, cur.exclusive))
            } else {
                None
            };
            if let Some((arg, received, current)) = field {
                return Err(inequivalent(
                    "queue", arg, &name, &self.name, received, current,
                ));
            }
            for key in EQUIVALENCE_ARGS {
                let (received, current) = (options.arguments.get(key), cur.arguments.get(key));
                let same = match (received, current) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.loosely_equals(b),
                    _ => false,
                };
                if !same {
                    return Err(inequivalent(
                        "queue",
                        key,
                        &name,
                        &self.name,
                        show_opt(received),
                        show_opt(current),
                    ));
                }
            }
            existing.touch();
            return Ok(declared(existing.clone()));
        }
        let max = self.max_queues();
        if max != 0 && queues.len() >= max {
            return Err(CoreError::PreconditionFailed(format!(
                "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                self.name
            )));
        }
        let owner = options.exclusive.then_some(conn);
        // Exclusive queues die with their connection, so they are never persisted.
        let durable_id = match &self.persistence {
            Some(p) if options.durable && !options.exclusive => Some(p.next_queue_id()),
            _ => None,
        };
        let durability = self.durability(durable_id);
        let stream = match args.stream {
            Some(settings) => Some(self.open_stream(durable_id, &settings, &name)?),
            None => None,
        };
        if let (Some(d), Some(id)) = (&durability, durable_id) {
            let def = QueueDef {
                vhost: self.name.to_string(),
                name: name.to_string(),
                id,
                options: options.clone(),
            };
            d.persistence
                .put_definition("queue", &QueueDef::key(&self.name, &name), &def.encode());
        }
        let queue = Queue::new(
            self.name.clone(),
            name.clone(),
            options,
            args,
            owner,
            durability,
            self.myself.clone(),
        );
        if let Some(log) = stream {
            queue.attach_stream(log);
        }
        queues.insert(name, queue.clone());
        Ok(declared(queue))
    }

    /// queue.delete; returns the number of messages deleted. Deleting a queue
    /// that does not exist succeeds with 0, as in RabbitMQ.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: ConnectionId,
    ) -> CoreResult<u32> {
        let Some(queue) = self.queues.read().get(name).cloned() else {
            return Ok(0);
        };
        queue.check_access(conn)?;
        queue.check_delete(if_unused, if_empty)?;
        Ok(self.remove_queue(&queue) as u32)
    }

    /// Removes a queue regardless of preconditions (exclusive owner gone,
    /// auto-delete); returns the ready messages it held.
    pub fn remove_queue(&self, queue: &Arc<Queue>) -> usize {
        {
            let mut queues = self.queues.write();
            match queues.get(queue.name()) {
                Some(q) if Arc::ptr_eq(q, queue) => {
                    queues.remove(queue.name());
                }
                _ => return 0,
            }
        }
        let durable = queue.durable_id().is_some();
        if durable && let Some(p) = &self.persistence {
            p.delete_definition("queue", &QueueDef::key(&self.name, queue.name()));
        }
        self.unbind_everywhere(&Destination::Queue(queue.clone()), durable);
        queue.mark_deleted()
    }

    /// The id set by [`VHost::set_incarnation`] (0 until then).
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records which incarnation of the name this vhost is.
    pub fn set_incarnation(&self, id: u64) {
        self.incarnation
            .store(id, std::sync::atomic::Ordering::Release);
    }

    /// Whether the vhost was deleted (`rabbitmqctl delete_vhost`); the
    /// protocols close the connections still using it.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Deletes everything the vhost holds, as `delete_vhost` does: every
    /// queue with its messages, every exchange the users declared, waiting
    /// delayed messages, and their stored definitions. The vhost is marked
    /// deleted so that connections still using it close.
    pub(crate) fn destroy(&self) {
        self.deleted
            .store(true, std::sync::atomic::Ordering::Release);
        for queue in self.queues() {
            self.remove_queue(&queue);
        }
        let declared: Vec<Arc<str>> = self
            .exchanges
            .read()
            .keys()
            .filter(|n| !n.is_empty() && !n.starts_with("amq."))
            .cloned()
            .collect();
        for name in declared {
            let _ = self.delete_exchange(&name, false);
        }
        let held = self.waiting.lock().due(u64::MAX);
        if let Some(p) = &self.persistence {
            for s in held.into_iter().filter_map(|h| h.stored) {
                p.ack(s.queue, s.msg_id);
            }
            let ids = *self.delay_ids.lock();
            for id in [ids.0, ids.1].into_iter().flatten() {
                p.queue_deleted(id);
            }
            if ids.0.is_some() {
                p.delete_definition("delayed", &self.name);
            }
        }
    }

    /// Deletes every exclusive queue a closing connection owned.
    pub fn connection_closed(&self, conn: ConnectionId) {
        let owned: Vec<_> = self
            .queues
            .read()
            .values()
            .filter(|q| q.owner() == Some(conn))
            .cloned()
            .collect();
        for q in owned {
            self.remove_queue(&q);
        }
    }

    /// Removes a consumer, deleting an auto-delete queue left without consumers.
    pub fn cancel_consumer(&self, queue: &Arc<Queue>, conn: ConnectionId, channel: u16, tag: &str) {
        if queue.remove_consumer(conn, channel, tag) {
            self.remove_queue(queue);
        }
    }

    /// queue.bind.
    pub fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        arguments: Table,
        conn: ConnectionId,
    ) -> CoreResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let q = self.queue(queue, conn)?;
        let x = self.exchange(exchange)?;
        self.bind_persisted(
            &x,
            Binding {
                destination: Destination::Queue(q),
                key: key.to_string(),
                arguments,
            },
        );
        Ok(())
    }

    /// queue.unbind (a missing binding is not an error, as in RabbitMQ).
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        arguments: Table,
        conn: ConnectionId,
    ) -> CoreResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let q = self.queue(queue, conn)?;
        let x = self.exchange(exchange)?;
        let durable = q.durable_id().is_some();
        let b = Binding {
            destination: Destination::Queue(q),
            key: key.to_string(),
            arguments,
        };
        if self.unbind_persisted(&x, &[b], durable) {
            self.auto_delete_exchange(&x);
        }
        Ok(())
    }

    /// exchange.bind: `destination` receives what `source` routes.
    pub fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        arguments: Table,
    ) -> CoreResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let d = self.exchange(destination)?;
        let s = self.exchange(source)?;
        self.bind_persisted(
            &s,
            Binding {
                destination: Destination::Exchange(d.name().into()),
                key: key.to_string(),
                arguments,
            },
        );
        Ok(())
    }

    /// exchange.unbind.
    pub fn unbind_exchange(
        &self,
        destination: &str,
        source: &str,
        key: &str,
        arguments: Table,
    ) -> CoreResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let d = self.exchange(destination)?;
        let s = self.exchange(source)?;
        let b = Binding {
            destination: Destination::Exchange(d.name().into()),
            key: key.to_string(),
            arguments,
        };
        if self.unbind_persisted(&s, &[b], d.options().durable) {
            self.auto_delete_exchange(&s);
        }
        Ok(())
    }

    /// Finds the queues a message published to `exchange` with `routing_key` reaches.
    /// An internal exchange refuses direct publishes (403); it only receives through bindings.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &[u8],
        properties: &Properties,
        routed: &mut Routed,
    ) -> CoreResult<()> {
        if exchange.is_empty() {
            if let Ok(name) = std::str::from_utf8(routing_key)
                && let Some(q) = self.queues.read().get(name)
            {
                routed.queues.push(q.clone());
            }
            return Ok(());
        }
        let x = self.exchange(exchange)?;
        if x.options().internal {
            return Err(CoreError::AccessRefused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        self.route_from(x, routing_key, properties, routed);
        Ok(())
    }

    /// Routes without the internal-exchange check (dead-lettering may target one).
    fn route_internal(
        &self,
        exchange: &str,
        routing_key: &[u8],
        properties: &Properties,
        routed: &mut Routed,
    ) -> CoreResult<()> {
        if exchange.is_empty() {
            return self.route(exchange, routing_key, properties, routed);
        }
        let x = self.exchange(exchange)?;
        self.route_from(x, routing_key, properties, routed);
        Ok(())
    }

    /// Follows bindings (exchange-to-exchange too, each exchange once) and,
    /// when nothing matched, the `alternate-exchange` chain.
    fn route_from(
        &self,
        first: Arc<Exchange>,
        routing_key: &[u8],
        properties: &Properties,
        routed: &mut Routed,
    ) {
        let mut visited: Vec<Arc<str>> = Vec::new();
        let mut start = Some(first);
        while let Some(x) = start.take() {
            let mut pending = vec![x.clone()];
            while let Some(x) = pending.pop() {
                if visited.len() >= MAX_EXCHANGE_HOPS {
                    return;
                }
                if visited.iter().any(|v| **v == *x.name()) {
                    continue;
                }
                visited.push(x.name().into());
                // Exchange destinations are looked up only after the bindings
                // guard is released: never hold a bindings lock while taking the
                // exchange map's (delete_exchange takes them the other way round).
                let mut next_names: Vec<Arc<str>> = Vec::new();
                x.route(routing_key, properties, |d| match d {
                    Destination::Queue(q) => {
                        if !routed.queues.iter().any(|r| Arc::ptr_eq(r, q)) {
                            routed.queues.push(q.clone());
                        }
                    }
                    Destination::Exchange(name) => next_names.push(name.clone()),
                });
                for name in next_names {
                    if !visited.contains(&name)
                        && let Some(next) = self.exchanges.read().get(&name)
                    {
                        pending.push(next.clone());
                    }
                }
            }
            if routed.queues.is_empty()
                && let Some(ae) = x
                    .options()
                    .arguments
                    .get("alternate-exchange")
                    .and_then(Value::as_str)
                && !visited.iter().any(|v| &**v == ae)
            {
                start = self.exchanges.read().get(ae).cloned();
            }
        }
    }

    /// Routes and enqueues a message; returns how many queues took it.
    pub fn publish(&self, message: Arc<Message>, routed: &mut Routed) -> CoreResult<usize> {
        let exchange = std::str::from_utf8(&message.exchange)
            .map_err(|_| self.no_exchange("<invalid utf-8>"))?;
        self.route(exchange, &message.routing_key, &message.properties, routed)?;
        self.enqueue(&message, &routed.queues);
        Ok(routed.queues.len())
    }

    /// Appends a routed message to its queues. A persistent message is written
    /// to the store once for all the durable queues that accept it.
    pub fn enqueue(&self, message: &Arc<Message>, queues: &[Arc<Queue>]) -> Enqueued {
        let mut out = Enqueued::default();
        let size = message.size();
        let mut written = None;
        if message.properties.is_persistent()
            && let Some(p) = &self.persistence
        {
            let ids: Vec<u64> = queues
                .iter()
                .filter(|q| !q.is_stream() && !q.would_refuse(size))
                .filter_map(|q| q.durable_id())
                .collect();
            if !ids.is_empty() {
                let msg_id = p.next_msg_id();
                let at = p.publish(msg_id, &ids, message);
                written = Some((msg_id, at, ids));
                out.on_disk = true;
            }
        }
        for q in queues {
            let stored = match (q.durable_id(), &written) {
                (Some(queue), Some((msg_id, at, ids))) if ids.contains(&queue) => Some(Stored {
                    queue,
                    msg_id: *msg_id,
                    at: *at,
                }),
                _ => None,
            };
            if q.publish(message.clone(), stored) == Accepted::Rejected {
                out.rejected = true;
            } else if q.is_stream() && self.persistence.is_some() {
                // Confirmed once the stream's fsync is done too (the persistence's
                // `when_durable` covers the stream logs).
                out.on_disk = true;
            }
        }
        out
    }

    /// Republishes a message a queue gave up on to its dead-letter exchange,
    /// with RabbitMQ's `x-death` bookkeeping; dropped if the exchange is gone
    /// or the route would be a cycle with no rejection in it.
    pub fn dead_letter(
        &self,
        message: &Message,
        queue: &str,
        reason: Reason,
        dlx: &str,
        routing_key: Option<&str>,
        now_ms: u64,
    ) {
        let dead = dead_lettered(message, queue, reason, now_ms / 1000);
        let dead = match routing_key {
            Some(k) => dead.rerouted(
                dead.exchange.clone(),
                bytes::Bytes::copy_from_slice(k.as_bytes()),
                dead.properties.clone(),
            ),
            None => dead,
        };
        let mut routed = Routed::default();
        let mut keys = vec![dead.routing_key.clone()];
        if routing_key.is_none() {
            keys.extend(dead.properties.cc_keys("CC"));
        }
        for key in &keys {
            if self
                .route_internal(dlx, key, &dead.properties, &mut routed)
                .is_err()
            {
                return;
            }
        }
        routed.queues.retain(|q| !is_cycle(&dead, q.name()));
        let dead = dead.rerouted(
            bytes::Bytes::copy_from_slice(dlx.as_bytes()),
            dead.routing_key.clone(),
            dead.properties.clone(),
        );
        self.enqueue(&dead, &routed.queues);
    }

    /// Holds a message published to an `x-delayed-message` exchange with a
    /// positive `x-delay`; None when it should be routed now.
    pub fn hold_delayed(&self, exchange: &str, message: &Arc<Message>) -> Option<Enqueued> {
        if exchange.is_empty() {
            return None;
        }
        let x = self.exchanges.read().get(exchange).cloned()?;
        if !x.options().delayed || x.options().internal {
            return None;
        }
        let delay = requested_delay(message)?;
        let fire_at = crate::args::now_ms().saturating_add(delay);
        let mut out = Enqueued::default();
        let held = match &self.persistence {
            None => Held {
                message: Some(message.clone()),
                stored: None,
            },
            Some(p) => {
                let durable = message.properties.is_persistent() && x.options().durable;
                let queue = self.delay_store_id(p, durable);
                let msg_id = p.next_msg_id();
                let copy = with_fire_at(message, Some(fire_at));
                match p.publish(msg_id, &[queue], &copy) {
                    Some(at) => {
                        out.on_disk = durable;
                        Held {
                            message: None,
                            stored: Some(Stored {
                                queue,
                                msg_id,
                                at: Some(at),
                            }),
                        }
                    }
                    None => Held {
                        message: Some(message.clone()),
                        stored: None,
                    },
                }
            }
        };
        self.waiting.lock().hold(fire_at, held);
        Some(out)
    }

    /// The store id delayed messages wait under: a durable one (recorded as a
    /// definition so a restart finds them) or a scratch one.
    fn delay_store_id(&self, p: &SharedPersistence, durable: bool) -> u64 {
        let mut ids = self.delay_ids.lock();
        let slot = if durable { &mut ids.0 } else { &mut ids.1 };
        *slot.get_or_insert_with(|| {
            let id = p.next_queue_id();
            if durable {
                p.put_definition("delayed", &self.name, &id.to_le_bytes());
            }
            id
        })
    }

    /// Restores delayed messages found in the store at start-up under the
    /// durable delay id; they fire at their recorded time.
    pub fn restore_delayed(&self, id: u64, messages: Vec<(Arc<Message>, Stored)>) {
        self.delay_ids.lock().0 = Some(id);
        let now = crate::args::now_ms();
        let mut w = self.waiting.lock();
        for (m, stored) in messages {
            let fire_at = recorded_fire_at(&m).unwrap_or(now);
            w.hold(
                fire_at,
                Held {
                    message: None,
                    stored: Some(stored),
                },
            );
        }
    }

    /// Delayed messages waiting to fire.
    pub fn delayed_count(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Routes the delayed messages that are due.
    fn fire_delayed(&self, now_ms: u64) {
        let due = self.waiting.lock().due(now_ms);
        for held in due {
            let message = match (
                &held.message,
                held.stored.and_then(|s| s.at),
                &self.persistence,
            ) {
                (Some(m), _, _) => Some(m.clone()),
                (None, Some(at), Some(p)) => p
                    .read(at)
                    .and_then(|b| crate::persist::decode_message(b).ok())
                    .map(Arc::new),
                _ => None,
            };
            if let Some(m) = message {
                let m = with_fire_at(&m, None);
                let mut routed = Routed::default();
                let exchange = String::from_utf8_lossy(&m.exchange).into_owned();
                if self
                    .route_internal(&exchange, &m.routing_key, &m.properties, &mut routed)
                    .is_ok()
                {
                    self.enqueue(&m, &routed.queues);
                }
            }
            if let (Some(s), Some(p)) = (held.stored, &self.persistence) {
                p.ack(s.queue, s.msg_id);
            }
        }
    }

    /// The periodic sweep: fires due delayed messages, expires messages and
    /// deletes queues unused past `x-expires`.
    pub fn tick(&self, now_ms: u64) {
        self.fire_delayed(now_ms);
        let queues: Vec<Arc<Queue>> = self
            .queues
            .read()
            .values()
            .filter(|q| q.needs_tick())
            .cloned()
            .collect();
        for q in queues {
            if q.tick(now_ms) {
                self.remove_queue(&q);
            }
        }
    }
}

/// A stream is durable, not exclusive and not auto-delete; RabbitMQ's refusals otherwise.
fn check_stream_properties(options: &QueueOptions, name: &str, vhost: &str) -> CoreResult<()> {
    let bad = if options.auto_delete {
        Some("auto-delete")
    } else if options.exclusive {
        Some("exclusive")
    } else if !options.durable {
        Some("non-durable")
    } else {
        None
    };
    match bad {
        Some(property) => Err(CoreError::PreconditionFailed(format!(
            "invalid property '{property}' for queue '{name}' in vhost '{vhost}'"
        ))),
        None => Ok(()),
    }
}

/// Queue arguments that must match on redeclare, as RabbitMQ checks them;
/// other arguments are ignored on redeclare.
const EQUIVALENCE_ARGS: [&str; 12] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-master-locator",
];

fn show_opt(v: Option<&Value>) -> String {
    v.map(show).unwrap_or_else(|| "none".into())
}

fn show(v: &Value) -> String {
    match v {
        Value::ShortStr(b) | Value::LongStr(b) => String::from_utf8_lossy(b).into_owned(),
        other => other
            .as_i64()
            .map(|i| i.to_string())
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn opts(kind: ExchangeKind) -> ExchangeOptions {
        ExchangeOptions {
            delayed: false,
            kind,
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: Table::default(),
        }
    }

    fn publish(v: &VHost, exchange: &'static str, key: &'static str) -> Vec<String> {
        let m = Message::new(
            Bytes::from_static(exchange.as_bytes()),
            Bytes::from_static(key.as_bytes()),
            Properties::default(),
            Bytes::new(),
        );
        let mut r = Routed::default();
        v.publish(m, &mut r).unwrap();
        let mut names: Vec<String> = r.queues.iter().map(|q| q.name().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn standard_exchanges_exist_and_amq_prefix_is_reserved() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        for name in [
            "amq.direct",
            "amq.fanout",
            "amq.topic",
            "amq.headers",
            "amq.match",
        ] {
            assert!(v.declare_exchange(name, "direct", true, opts).is_ok());
        }
        assert!(matches!(
            v.declare_exchange("amq.foo", "direct", false, opts),
            Err(CoreError::AccessRefused(_))
        ));
        assert!(matches!(
            v.declare_exchange("x", "nope", false, opts),
            Err(CoreError::CommandInvalid(_))
        ));
        v.declare_exchange("x", "direct", false, opts).unwrap();
        assert!(matches!(
            v.declare_exchange("x", "fanout", false, opts),
            Err(CoreError::PreconditionFailed(_))
        ));
    }

    #[test]
    fn queue_limit_refuses_new_queues_only() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        v.set_max_queues(2);
        v.declare_queue("a", false, QueueOptions::default(), 1)
            .unwrap();
        v.declare_queue("b", false, QueueOptions::default(), 1)
            .unwrap();
        // Redeclaring and passive declares still work at the limit.
        v.declare_queue("a", false, QueueOptions::default(), 1)
            .unwrap();
        v.declare_queue("b", true, QueueOptions::default(), 1)
            .unwrap();
        match v.declare_queue("c", false, QueueOptions::default(), 1) {
            Err(e @ CoreError::PreconditionFailed(_)) => assert_eq!(
                e.to_string(),
                "PRECONDITION_FAILED - cannot declare queue 'c': queue limit in vhost '/' (2) is reached"
            ),
            other => panic!("{other:?}"),
        }
        v.delete_queue("a", false, false, 1).unwrap();
        v.declare_queue("c", false, QueueOptions::default(), 1)
            .unwrap();
        v.set_max_queues(0);
        v.declare_queue("d", false, QueueOptions::default(), 1)
            .unwrap();
    }

    #[test]
    fn exchange_to_exchange_with_cycle() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        v.declare_exchange("a", "fanout", false, opts).unwrap();
        v.declare_exchange("b", "fanout", false, opts).unwrap();
        v.declare_queue("q", false, QueueOptions::default(), 1)
            .unwrap();
        v.bind_exchange("b", "a", "", Table::default()).unwrap();
        v.bind_exchange("a", "b", "", Table::default()).unwrap();
        v.bind_queue("q", "b", "", Table::default(), 1).unwrap();
        assert_eq!(publish(&v, "a", "k"), vec!["q"]);
    }

    #[test]
    fn default_exchange_routes_by_queue_name() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        v.declare_queue("q1", false, QueueOptions::default(), 1)
            .unwrap();
        assert_eq!(publish(&v, "", "q1"), vec!["q1"]);
        assert!(publish(&v, "", "nope").is_empty());
    }

    #[test]
    fn exclusive_queue_is_locked_and_removed_with_owner() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        let o = QueueOptions {
            exclusive: true,
            ..Default::default()
        };
        let d = v.declare_queue("", false, o, 7).unwrap();
        let name = d.queue.name().to_string();
        assert!(name.starts_with("amq.gen-"));
        assert!(matches!(
            v.queue(&name, 8),
            Err(CoreError::ResourceLocked(_))
        ));
        v.connection_closed(7);
        assert!(matches!(v.queue(&name, 7), Err(CoreError::NotFound(_))));
    }

    #[test]
    fn auto_delete_exchange_goes_with_last_binding() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        v.declare_exchange("ad", "direct", false, |k| ExchangeOptions {
            delayed: false,
            auto_delete: true,
            ..opts(k)
        })
        .unwrap();
        v.declare_queue("q", false, QueueOptions::default(), 1)
            .unwrap();
        v.bind_queue("q", "ad", "k", Table::default(), 1).unwrap();
        v.unbind_queue("q", "ad", "k", Table::default(), 1).unwrap();
        assert!(v.exchange("ad").is_err());
    }

    #[test]
    fn queue_redeclare_compares_known_arguments() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(usize::MAX)));
        let with = |n: i64| QueueOptions {
            arguments: Table(vec![("x-max-length".into(), Value::I64(n))]),
            ..Default::default()
        };
        v.declare_queue("q", false, with(10), 1).unwrap();
        assert!(v.declare_queue("q", false, with(10), 1).is_ok());
        assert!(matches!(
            v.declare_queue("q", false, with(11), 1),
            Err(CoreError::PreconditionFailed(_))
        ));
        assert!(matches!(
            v.declare_queue("q", false, QueueOptions::default(), 1),
            Err(CoreError::PreconditionFailed(_))
        ));
        let unknown = QueueOptions {
            arguments: Table(vec![
                ("x-max-length".into(), Value::I32(10)),
                ("x-custom".into(), Value::Bool(true)),
            ]),
            ..Default::default()
        };
        assert!(v.declare_queue("q", false, unknown, 1).is_ok());
    }

    #[test]
    fn streams_are_durable_queues_that_keep_what_they_deliver() {
        let v = VHost::new("/", None, Arc::new(MemoryBudget::new(1 << 20)));
        let stream_args = || {
            let mut t = Table::default();
            t.insert(
                "x-queue-type",
                Value::LongStr(Bytes::from_static(b"stream")),
            );
            t
        };
        for (opts, property) in [
            (
                QueueOptions {
                    durable: true,
                    auto_delete: true,
                    ..QueueOptions::default()
                },
                "auto-delete",
            ),
            (
                QueueOptions {
                    durable: true,
                    exclusive: true,
                    ..QueueOptions::default()
                },
                "exclusive",
            ),
            (QueueOptions::default(), "non-durable"),
        ] {
            let opts = QueueOptions {
                arguments: stream_args(),
                ..opts
            };
            match v.declare_queue("s", false, opts, 1) {
                Err(CoreError::PreconditionFailed(text)) => assert_eq!(
                    text,
                    format!("invalid property '{property}' for queue 's' in vhost '/'")
                ),
                other => panic!("{other:?}"),
            }
        }
        let opts = QueueOptions {
            durable: true,
            arguments: stream_args(),
            ..QueueOptions::default()
        };
        let q = v.declare_queue("s", false, opts, 1).unwrap().queue;
        assert!(q.is_stream());
        let mut headers = Table::default();
        headers.insert(
            crate::stream::FILTER_VALUE_HEADER,
            Value::LongStr(Bytes::from_static(b"eu")),
        );
        let m = Message::new(
            Bytes::new(),
            Bytes::from_static(b"s"),
            Properties {
                headers: Some(headers),
                ..Properties::default()
            },
            Bytes::from_static(b"hello"),
        );
        let mut r = Routed::default();
        assert_eq!(v.publish(m, &mut r).unwrap(), 1);
        assert!(
            q.get(false).is_none(),
            "basic.get takes nothing from a stream"
        );
        assert_eq!(q.stats().ready, 1);
        let log = q.stream().unwrap();
        let records = log
            .reader(crate::stream::StreamStart::First)
            .read(10, 1 << 20);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].filter.as_deref(), Some(&b"eu"[..]));
        let back = crate::persist::decode_message(records[0].payload.clone()).unwrap();
        assert_eq!(&back.body[..], b"hello");
        assert_eq!(
            v.declare_queue("s", true, QueueOptions::default(), 1)
                .unwrap()
                .message_count,
            1
        );
    }
}
