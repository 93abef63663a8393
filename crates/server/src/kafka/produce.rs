//! Produce: each record becomes a message appended to the partition's stream, as an AMQP
//! publish to the stream would be (same encoding, so AMQP consumers read it), with Kafka
//! metadata mapped onto AMQP properties:
//!
//! | Kafka | AMQP |
//! | --- | --- |
//! | value | body |
//! | key | header `x-kafka-key` (long string) |
//! | headers | headers (long strings; a null value is void) |
//! | timestamp (ms) | `timestamp` property (s); the stream record keeps the ms |
//!
//! acks=0 gets no answer; acks=1 and acks=-1 are answered after the appends are fsynced.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tributary_core::persist::encode_message;
use tributary_core::stream::{FILTER_VALUE_HEADER, StreamLog};
use tributary_core::{Message, Properties, Table, Value};
use tributary_kafka::records::{Record, decode_batches};
use tributary_kafka::request::ProduceRequest;
use tributary_kafka::response::{self, ProducePartitionResponse};
use tributary_kafka::{DecodeError, code};

use super::{Conn, Outcome};
use crate::users::Access;

/// The AMQP header that carries a Kafka record's key.
pub const KEY_HEADER: &str = "x-kafka-key";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A Kafka record as the AMQP message a stream stores.
pub fn to_message(stream: &str, record: Record, timestamp: i64) -> Message {
    let mut headers = Table::default();
    for (k, v) in record.headers {
        headers.insert(k, v.map_or(Value::Void, Value::LongStr));
    }
    if let Some(key) = record.key {
        headers.insert(KEY_HEADER, Value::LongStr(key));
    }
    Message {
        exchange: Bytes::new(),
        routing_key: Bytes::copy_from_slice(stream.as_bytes()),
        properties: Properties {
            headers: (!headers.is_empty()).then_some(headers),
            delivery_mode: Some(2),
            timestamp: (timestamp >= 0).then_some((timestamp / 1000) as u64),
            ..Properties::default()
        },
        body: record.value.unwrap_or_default(),
    }
}

fn partition_error(index: i32, error: i16, message: Option<String>) -> ProducePartitionResponse {
    ProducePartitionResponse {
        index,
        error,
        base_offset: -1,
        log_start_offset: -1,
        message,
    }
}

impl Conn {
    pub(super) async fn produce(&mut self, v: i16, r: ProduceRequest) -> Outcome {
        let mut touched: Vec<Arc<dyn StreamLog>> = Vec::new();
        let mut results = Vec::with_capacity(r.topics.len());
        let max = self.ctx.config.max_request_size;
        for (topic, parts) in r.topics {
            let found = if super::topics::valid_name(&topic) {
                self.topic(&topic, true)
            } else {
                Err(code::INVALID_TOPIC_EXCEPTION)
            };
            let mut answers = Vec::with_capacity(parts.len());
            for part in parts {
                let queue = match &found {
                    Err(e) => {
                        answers.push(partition_error(part.index, *e, None));
                        continue;
                    }
                    Ok(qs) => match usize::try_from(part.index).ok().and_then(|i| qs.get(i)) {
                        Some(q) => q.clone(),
                        None => {
                            answers.push(partition_error(
                                part.index,
                                code::UNKNOWN_TOPIC_OR_PARTITION,
                                None,
                            ));
                            continue;
                        }
                    },
                };
                if !self.may(Access::Write, queue.name()) {
                    answers.push(partition_error(
                        part.index,
                        code::TOPIC_AUTHORIZATION_FAILED,
                        None,
                    ));
                    continue;
                }
                let Some(log) = queue.stream().cloned() else {
                    answers.push(partition_error(
                        part.index,
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        None,
                    ));
                    continue;
                };
                let batches = match decode_batches(part.records.unwrap_or_default(), max) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, topic, error = %e, "refusing a produced batch");
                        let error = match e {
                            DecodeError::Compression(_) => code::UNSUPPORTED_COMPRESSION_TYPE,
                            DecodeError::DecompressedTooLarge(_) => code::MESSAGE_TOO_LARGE,
                            _ => code::CORRUPT_MESSAGE,
                        };
                        answers.push(partition_error(part.index, error, Some(e.to_string())));
                        continue;
                    }
                };
                let now = now_ms();
                let mut base = None;
                let mut failed = false;
                let mut count = 0u64;
                for batch in batches.into_iter().filter(|b| !b.is_control()) {
                    for record in batch.records {
                        let ts = if record.timestamp >= 0 {
                            record.timestamp
                        } else {
                            now
                        };
                        let message = to_message(queue.name(), record, ts);
                        let payload = encode_message(&message);
                        let filter = message
                            .properties
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(FILTER_VALUE_HEADER))
                            .and_then(Value::as_bytes);
                        match log.append(ts, filter, &payload) {
                            Some(offset) => {
                                base.get_or_insert(offset);
                                count += 1;
                            }
                            None => {
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                queue
                    .counters()
                    .published
                    .fetch_add(count, Ordering::Relaxed);
                self.records_in += count;
                if failed {
                    answers.push(partition_error(
                        part.index,
                        code::UNKNOWN_SERVER_ERROR,
                        Some("the stream refused the append".into()),
                    ));
                    continue;
                }
                if !touched.iter().any(|l| Arc::ptr_eq(l, &log)) {
                    touched.push(log.clone());
                }
                answers.push(ProducePartitionResponse {
                    index: part.index,
                    error: code::NONE,
                    base_offset: base.map_or(log.stats().committed as i64, |b| b as i64),
                    log_start_offset: log.stats().first_offset as i64,
                    message: None,
                });
            }
            results.push((topic, answers));
        }
        if r.acks == 0 {
            return Outcome::Silent;
        }
        // acks=1 and acks=all: both after the fsync (one broker: the leader is every replica).
        for log in touched {
            let (tx, rx) = tokio::sync::oneshot::channel();
            log.when_durable(Box::new(move || {
                let _ = tx.send(());
            }));
            if rx.await.is_err() {
                for (_, answers) in &mut results {
                    for a in answers.iter_mut() {
                        a.error = code::REQUEST_TIMED_OUT;
                    }
                }
                break;
            }
        }
        let mut out = BytesMut::new();
        response::produce(v, &results, &mut out);
        Outcome::Reply(out)
    }
}
