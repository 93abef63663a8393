//! Consuming a stream queue over AMQP 0-9-1, as RabbitMQ does: each consumer is a reader
//! with its own offset, fed by a task that pulls records from the log while the consumer
//! has credit (its prefetch), waits for new records at the tail, and stamps each delivery
//! with its offset in the `x-stream-offset` header. Acks only return credit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tributary_core::persist::decode_message;
use tributary_core::stream::{StreamLog, StreamRecord, StreamStart};
use tributary_core::{ConsumerSink, CoreError, Delivery, Entry, Queue, Table, Value};

use super::consumer::{AmqpConsumer, Sink};

/// Records read from the log at a time, at most.
const READ_BATCH: usize = 256;
/// Payload bytes read from the log at a time, about.
const READ_BYTES: usize = 1 << 20;

/// RabbitMQ 3.13's stream filtering: `x-stream-filter` (one value or a list) and
/// `x-stream-match-unfiltered` (also deliver records without a filter value).
#[derive(Debug, Clone, Default)]
pub struct StreamFilter {
    values: Vec<Bytes>,
    match_unfiltered: bool,
}

impl StreamFilter {
    /// The filter asked for by basic.consume's arguments (None: deliver everything).
    pub fn from_arguments(args: &Table) -> Option<StreamFilter> {
        let values: Vec<Bytes> = match args.get("x-stream-filter")? {
            Value::Array(list) => list
                .iter()
                .filter_map(|v| v.as_bytes().map(Bytes::copy_from_slice))
                .collect(),
            v => vec![Bytes::copy_from_slice(v.as_bytes()?)],
        };
        let match_unfiltered = matches!(
            args.get("x-stream-match-unfiltered"),
            Some(Value::Bool(true))
        );
        Some(StreamFilter {
            values,
            match_unfiltered,
        })
    }

    fn accepts(&self, record: &StreamRecord) -> bool {
        match &record.filter {
            Some(f) => self.values.iter().any(|v| v == f),
            None => self.match_unfiltered,
        }
    }
}

/// Checks basic.consume on a stream as RabbitMQ does: a consumer prefetch is required and
/// automatic acknowledgement is refused.
pub fn check_consume(
    queue: &str,
    vhost: &str,
    prefetch: u32,
    no_ack: bool,
) -> Result<(), CoreError> {
    if prefetch == 0 {
        return Err(CoreError::PreconditionFailed(format!(
            "consumer prefetch count is not set for 'queue '{queue}' in vhost '{vhost}''"
        )));
    }
    if no_ack {
        return Err(CoreError::NotImplemented(format!(
            "automatic acknowledgement not supported by stream queues queue '{queue}' in vhost '{vhost}'"
        )));
    }
    Ok(())
}

/// Starts feeding `consumer` from `log` at `start`. The task ends when the consumer is no
/// longer live (woken through `wake`) or the stream is deleted (the consumer is then told).
pub fn spawn(
    queue: Arc<Queue>,
    log: Arc<dyn StreamLog>,
    start: StreamStart,
    consumer: Arc<AmqpConsumer>,
    filter: Option<StreamFilter>,
    wake: Arc<Notify>,
) {
    // The reader is positioned now, so `next` means "after what is committed at consume".
    let cursor = log.reader(start);
    tokio::spawn(async move {
        let mut cursor = cursor;
        let sink = Sink(consumer.clone());
        let mut pending: VecDeque<StreamRecord> = VecDeque::new();
        loop {
            if !consumer.live.load(Ordering::Acquire) {
                return;
            }
            if log.is_destroyed() {
                sink.cancelled();
                return;
            }
            while !pending.is_empty() && sink.try_reserve() {
                let Some(record) = pending.pop_front() else {
                    break;
                };
                match delivery(&queue, record) {
                    Some(d) => {
                        queue.counters().delivered.fetch_add(1, Ordering::Relaxed);
                        if sink.deliver(d).is_err() {
                            return;
                        }
                    }
                    None => sink.unreserve(),
                }
            }
            if !pending.is_empty() {
                // Out of credit: an ack, basic.qos or a drained connection wakes us.
                wake.notified().await;
                continue;
            }
            let batch = cursor.read(
                READ_BATCH.min(consumer.prefetch.max(1) as usize),
                READ_BYTES,
            );
            if batch.is_empty() {
                if log.stats().committed > cursor.next_offset() {
                    // Readable records that could not be read (an I/O error was logged):
                    // retry later rather than spin.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                let w = wake.clone();
                log.on_commit(cursor.next_offset(), Box::new(move || w.notify_one()));
                wake.notified().await;
                continue;
            }
            pending.extend(
                batch
                    .into_iter()
                    .filter(|r| filter.as_ref().is_none_or(|f| f.accepts(r))),
            );
        }
    });
}

/// A record as a delivery, with its offset in the `x-stream-offset` header.
fn delivery(queue: &Arc<Queue>, record: StreamRecord) -> Option<Delivery> {
    let mut message = match decode_message(record.payload) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(queue = queue.name(), offset = record.offset, error = %e, "skipping an undecodable stream record");
            return None;
        }
    };
    message
        .properties
        .headers
        .get_or_insert_with(Table::default)
        .insert("x-stream-offset", Value::I64(record.offset as i64));
    Some(Delivery {
        queue: queue.clone(),
        entry: Entry {
            seq: record.offset,
            message: Arc::new(message),
            redelivered: false,
            stored: None,
            expires_at: None,
            delivery_count: 0,
        },
    })
}
