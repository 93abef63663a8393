//! Fetch (long polling woken by the streams' commits) and ListOffsets. Records are read from
//! the stream log through a reader kept per partition while the client reads on from where
//! the last fetch ended, and answered as one uncompressed record batch per partition.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;
use tributary_core::Value;
use tributary_core::persist::decode_message;
use tributary_core::stream::{StreamCursor, StreamLog, StreamRecord, StreamStart};
use tributary_kafka::code;
use tributary_kafka::compression::Compression;
use tributary_kafka::records::{Record, encode_batch, record_size};
use tributary_kafka::request::{FetchRequest, ListOffsetsRequest};
use tributary_kafka::response::{self, FetchPartitionResponse};

use super::Conn;
use super::produce::KEY_HEADER;
use crate::users::Access;

/// The longest a Fetch may wait.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Records read from a log at a time.
const READ_BATCH: usize = 500;

/// Open readers of one connection, by stream queue name, and the connection's commit
/// listeners: at most one registered per stream at a time (a client polling an idle stream
/// must not pile up listeners until the next append).
#[derive(Default)]
pub struct Cursors {
    readers: HashMap<String, Box<dyn StreamCursor>>,
    wake: Arc<Notify>,
    armed: Arc<parking_lot::Mutex<HashSet<String>>>,
}

impl Cursors {
    /// Asks `log` to wake the connection once `offset` is readable, unless it already will.
    fn arm(&self, queue: &str, log: &Arc<dyn StreamLog>, offset: u64) {
        if !self.armed.lock().insert(queue.to_owned()) {
            return;
        }
        let (armed, wake, name) = (self.armed.clone(), self.wake.clone(), queue.to_owned());
        log.on_commit(
            offset,
            Box::new(move || {
                armed.lock().remove(&name);
                wake.notify_one();
            }),
        );
    }
}

/// An AMQP header value as Kafka header bytes (None for void; tables and arrays are skipped).
fn header_bytes(v: &Value) -> Option<Option<Bytes>> {
    let text = |s: String| Some(Some(Bytes::from(s)));
    match v {
        Value::Void => Some(None),
        Value::LongStr(b) | Value::ShortStr(b) | Value::ByteArray(b) => Some(Some(b.clone())),
        Value::Bool(b) => text(b.to_string()),
        Value::F32(f) => text(f.to_string()),
        Value::F64(f) => text(f.to_string()),
        Value::Timestamp(t) => text(t.to_string()),
        Value::Array(_) | Value::Table(_) | Value::Decimal { .. } => None,
        other => other.as_integer().and_then(|n| text(n.to_string())),
    }
}

/// A stream record as a Kafka record (None when the payload does not decode).
pub fn to_record(r: StreamRecord) -> Option<Record> {
    let m = decode_message(r.payload).ok()?;
    let mut key = None;
    let mut headers = Vec::new();
    if let Some(h) = &m.properties.headers {
        for (k, v) in h.iter() {
            if k == KEY_HEADER {
                key = v.as_bytes().map(Bytes::copy_from_slice);
            } else if let Some(b) = header_bytes(v) {
                headers.push((k.clone(), b));
            }
        }
    }
    Some(Record {
        offset: r.offset as i64,
        timestamp: r.timestamp_ms,
        key,
        value: Some(m.body),
        headers,
    })
}

struct Part {
    topic: usize,
    partition: i32,
    log: Option<Arc<dyn StreamLog>>,
    queue: String,
    next: i64,
    max_bytes: usize,
    error: i16,
    records: Vec<Record>,
    bytes: usize,
}

impl Conn {
    fn cursor(
        &mut self,
        queue: &str,
        log: &Arc<dyn StreamLog>,
        offset: u64,
    ) -> &mut Box<dyn StreamCursor> {
        let fresh = self
            .fetch
            .readers
            .get(queue)
            .is_none_or(|c| c.next_offset() != offset);
        if fresh {
            self.fetch
                .readers
                .insert(queue.to_owned(), log.reader(StreamStart::Offset(offset)));
        }
        self.fetch.readers.get_mut(queue).expect("inserted above")
    }

    /// Reads what is available for each partition within the size limits; returns the bytes.
    fn read_parts(&mut self, parts: &mut [Part], max_total: usize, mut total: usize) -> usize {
        for p in parts.iter_mut() {
            let Some(log) = p.log.clone() else { continue };
            if p.error != code::NONE {
                continue;
            }
            let stats = log.stats();
            if p.next < stats.first_offset as i64 || p.next > stats.committed as i64 {
                p.error = code::OFFSET_OUT_OF_RANGE;
                continue;
            }
            while (p.next as u64) < stats.committed && p.bytes < p.max_bytes && total < max_total {
                let budget = (p.max_bytes - p.bytes).min(max_total - total);
                let queue = p.queue.clone();
                let batch = self
                    .cursor(&queue, &log, p.next as u64)
                    .read(READ_BATCH, budget);
                if batch.is_empty() {
                    break;
                }
                let mut cut = false;
                for r in batch {
                    let offset = r.offset as i64;
                    if cut {
                        continue;
                    }
                    let Some(rec) = to_record(r) else {
                        p.next = offset + 1;
                        continue;
                    };
                    let size = record_size(&rec);
                    // The first record is always returned, whatever its size (KIP-74).
                    let first = total == 0 && p.records.is_empty();
                    if !first && (p.bytes + size > p.max_bytes || total + size > max_total) {
                        cut = true;
                        continue;
                    }
                    p.bytes += size;
                    total += size;
                    p.next = offset + 1;
                    p.records.push(rec);
                }
                if cut {
                    // The reader went past what was returned: start a new one next time.
                    self.fetch.readers.remove(&queue);
                    break;
                }
            }
        }
        total
    }

    pub(super) async fn fetch(&mut self, v: i16, r: FetchRequest, out: &mut BytesMut) {
        let vhost = self.ctx.broker.vhost(self.vhost());
        let mut names = Vec::with_capacity(r.topics.len());
        let mut parts = Vec::new();
        for (topic, ps) in r.topics {
            let found = vhost
                .as_ref()
                .and_then(|vh| super::topics::find(vh, &topic, self.conn_id));
            for p in ps {
                let queue = found.as_ref().and_then(|qs| {
                    usize::try_from(p.partition)
                        .ok()
                        .and_then(|i| qs.get(i))
                        .cloned()
                });
                let (log, error) = match &queue {
                    None => (None, code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(q) if !self.may(Access::Read, q.name()) => {
                        (None, code::TOPIC_AUTHORIZATION_FAILED)
                    }
                    Some(q) => (q.stream().cloned(), code::NONE),
                };
                parts.push(Part {
                    topic: names.len(),
                    partition: p.partition,
                    error: if log.is_none() && error == code::NONE {
                        code::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        error
                    },
                    log,
                    queue: queue.map(|q| q.name().to_owned()).unwrap_or_default(),
                    next: p.fetch_offset,
                    max_bytes: p.partition_max_bytes.max(0) as usize,
                    records: Vec::new(),
                    bytes: 0,
                });
            }
            names.push(topic);
        }
        // What one answer may hold in memory: the client's maximum, within the request limit.
        let cap = self.ctx.config.max_request_size;
        let max_total = if r.max_bytes <= 0 {
            cap
        } else {
            (r.max_bytes as usize).min(cap)
        };
        let min_bytes = r.min_bytes.max(1) as usize;
        let wait = Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut total = 0;
        loop {
            // Armed before reading, so a commit between the read and the wait wakes us.
            for p in &parts {
                if let Some(log) = &p.log
                    && p.error == code::NONE
                {
                    self.fetch.arm(&p.queue, log, p.next.max(0) as u64);
                }
            }
            let notify = self.fetch.wake.clone();
            total = self.read_parts(&mut parts, max_total, total);
            let any_error = parts.iter().any(|p| p.error != code::NONE);
            if total >= min_bytes || any_error || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.ctx.shutdown.cancelled() => break,
            }
        }
        let mut topics: Vec<(String, Vec<FetchPartitionResponse>)> =
            names.into_iter().map(|n| (n, Vec::new())).collect();
        for p in parts {
            let stats = p.log.as_ref().map(|l| l.stats()).unwrap_or_default();
            self.records_out += p.records.len() as u64;
            let mut records = BytesMut::new();
            encode_batch(&mut records, &p.records, Compression::None);
            topics[p.topic].1.push(FetchPartitionResponse {
                partition: p.partition,
                error: p.error,
                high_watermark: if p.log.is_some() {
                    stats.committed as i64
                } else {
                    -1
                },
                log_start_offset: if p.log.is_some() {
                    stats.first_offset as i64
                } else {
                    -1
                },
                records: records.freeze(),
            });
        }
        response::fetch(v, &topics, out);
    }

    pub(super) fn list_offsets(&self, v: i16, r: ListOffsetsRequest, out: &mut BytesMut) {
        let vhost = self.ctx.broker.vhost(self.vhost());
        let topics: Vec<(String, Vec<response::ListedOffset>)> = r
            .topics
            .into_iter()
            .map(|(topic, ps)| {
                let found = vhost
                    .as_ref()
                    .and_then(|vh| super::topics::find(vh, &topic, self.conn_id));
                let answers = ps
                    .into_iter()
                    .map(|(p, ts)| {
                        let Some(q) = found
                            .as_ref()
                            .and_then(|qs| usize::try_from(p).ok().and_then(|i| qs.get(i)))
                        else {
                            return (p, code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
                        };
                        if !self.may(Access::Read, q.name()) {
                            return (p, code::TOPIC_AUTHORIZATION_FAILED, -1, -1);
                        }
                        let Some(log) = q.stream() else {
                            return (p, code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
                        };
                        let stats = log.stats();
                        match ts {
                            -2 => (p, code::NONE, -1, stats.first_offset as i64),
                            -1 => (p, code::NONE, -1, stats.committed as i64),
                            t => {
                                let mut reader = log.reader(StreamStart::Timestamp(t));
                                match reader.read(1, 1).into_iter().next() {
                                    Some(rec) => {
                                        (p, code::NONE, rec.timestamp_ms, rec.offset as i64)
                                    }
                                    None => (p, code::NONE, -1, -1),
                                }
                            }
                        }
                    })
                    .collect();
                (topic, answers)
            })
            .collect();
        response::list_offsets(v, &topics, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::produce::to_message;
    use tributary_core::persist::encode_message;

    #[test]
    fn a_record_survives_the_stream_and_amqp_headers_become_kafka_headers() {
        let record = Record {
            offset: 0,
            timestamp: 1_700_000_000_123,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![
                ("a".into(), Some(Bytes::from_static(b"1"))),
                ("n".into(), None),
            ],
        };
        let m = to_message("t", record.clone(), record.timestamp);
        assert_eq!(m.properties.timestamp, Some(1_700_000_000));
        let stored = StreamRecord {
            offset: 7,
            timestamp_ms: record.timestamp,
            filter: None,
            payload: encode_message(&m).freeze(),
        };
        let back = to_record(stored).unwrap();
        assert_eq!(
            back,
            Record {
                offset: 7,
                ..record
            }
        );
        // An AMQP publisher's typed headers.
        assert_eq!(header_bytes(&Value::I32(-5)), Some(Some(Bytes::from("-5"))));
        assert_eq!(
            header_bytes(&Value::Bool(true)),
            Some(Some(Bytes::from("true")))
        );
        assert_eq!(header_bytes(&Value::Array(vec![])), None);
    }
}
