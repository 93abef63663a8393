//! Streams as the core sees them: a queue whose messages go to an append-only log read by
//! offset ([`StreamLog`]), implemented outside the core (the server's `tributary-stream`
//! backend), plus the argument syntax RabbitMQ users write (`x-max-age`, `x-stream-offset`).

use crate::error::{CoreError, CoreResult};
use crate::message::{Table, Value};
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;

/// RabbitMQ's default `x-stream-max-segment-size-bytes`.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 500_000_000;
/// The header a publisher sets to give a message a filter value.
pub const FILTER_VALUE_HEADER: &str = "x-stream-filter-value";

/// A stream's retention and layout, from its queue arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `x-max-length-bytes`.
    pub max_bytes: Option<u64>,
    /// `x-max-age`, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment_bytes: u64,
}

/// Where a stream reader starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// The oldest retained record.
    First,
    /// The newest record.
    Last,
    /// Only records appended from now on (the default).
    Next,
    /// A record offset.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// One record read from a stream.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Its offset.
    pub offset: u64,
    /// When it was appended (ms since the epoch).
    pub timestamp_ms: i64,
    /// Its filter value, if the publisher set one.
    pub filter: Option<Bytes>,
    /// The message, encoded with [`crate::persist::encode_message`].
    pub payload: Bytes,
}

/// A stream's extent, for listings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Oldest retained offset.
    pub first_offset: u64,
    /// One past the newest durable record.
    pub committed: u64,
    /// Retained records.
    pub records: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// An append-only log with offsets. Appends return at once; durability is reported by
/// [`StreamLog::when_durable`]; readers see durable records only.
pub trait StreamLog: Send + Sync {
    /// Appends one record; returns its offset (None when the log refused it: failed or gone).
    fn append(&self, timestamp_ms: i64, filter: Option<&[u8]>, payload: &[u8]) -> Option<u64>;
    /// Calls `done` once everything appended before is durable (dropped if it never will be).
    fn when_durable(&self, done: Box<dyn FnOnce() + Send>);
    /// Calls `wake` once a record at or after `offset` is readable (at once if one is).
    fn on_commit(&self, offset: u64, wake: Box<dyn FnOnce() + Send>);
    /// A reader at `start`.
    fn reader(&self, start: StreamStart) -> Box<dyn StreamCursor>;
    /// Extent and size.
    fn stats(&self) -> StreamStats;
    /// Applies age-based retention.
    fn tick(&self, now_ms: u64);
    /// The stream was deleted: remove its data; readers see nothing more.
    fn destroy(&self);
    /// True once destroyed.
    fn is_destroyed(&self) -> bool;
}

/// A reader of a [`StreamLog`], with its own position.
pub trait StreamCursor: Send {
    /// The offset of the next record it returns.
    fn next_offset(&self) -> u64;
    /// Up to `max_records` records (and about `max_bytes`); empty at the end.
    fn read(&mut self, max_records: usize, max_bytes: usize) -> Vec<StreamRecord>;
}

fn invalid(queue: &str, vhost: &str, key: &str, why: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {why}"
    ))
}

/// Parses RabbitMQ's age syntax (`7D`, `1h`, `30m`, `10s`, `1Y`, `1M`) into milliseconds.
pub fn parse_age(text: &str) -> Option<u64> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        'Y' => 365 * 86_400,
        'M' => 30 * 86_400,
        'D' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

impl StreamSettings {
    /// The settings of a queue declared with `x-queue-type: stream`.
    pub fn parse(arguments: &Table, queue: &str, vhost: &str) -> CoreResult<Self> {
        let bytes = |key: &str| -> CoreResult<Option<u64>> {
            match arguments.get(key) {
                None => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n >= 0 => Ok(Some(n as u64)),
                    _ => Err(invalid(
                        queue,
                        vhost,
                        key,
                        "{unacceptable_type,not_a_positive_integer}",
                    )),
                },
            }
        };
        let max_age_ms = match arguments.get("x-max-age") {
            None => None,
            Some(v) => match v.as_str().and_then(parse_age) {
                Some(ms) => Some(ms),
                None => return Err(invalid(queue, vhost, "x-max-age", "{invalid_max_age}")),
            },
        };
        let max_segment_bytes =
            bytes("x-stream-max-segment-size-bytes")?.unwrap_or(DEFAULT_MAX_SEGMENT_BYTES);
        if max_segment_bytes > 3_000_000_000 {
            return Err(CoreError::PreconditionFailed(
                "Exceeded max value for x-stream-max-segment-size-bytes".into(),
            ));
        }
        Ok(StreamSettings {
            max_bytes: bytes("x-max-length-bytes")?,
            max_age_ms,
            max_segment_bytes: max_segment_bytes.max(1),
        })
    }
}

/// Whether queue arguments ask for a stream.
pub fn is_stream(arguments: &Table) -> bool {
    arguments.get("x-queue-type").and_then(Value::as_str) == Some("stream")
}

/// Parses a consumer's `x-stream-offset` as RabbitMQ does: `first`, `last`, `next`, a number,
/// a timestamp (AMQP `T`, seconds) or an interval string (`1h`: that long ago).
pub fn parse_start(value: Option<&Value>, now_ms: u64) -> CoreResult<StreamStart> {
    let Some(v) = value else {
        return Ok(StreamStart::Next);
    };
    if let Value::Timestamp(secs) = v {
        return Ok(StreamStart::Timestamp((*secs as i64).saturating_mul(1000)));
    }
    if let Some(s) = v.as_str() {
        return match s {
            "first" => Ok(StreamStart::First),
            "last" => Ok(StreamStart::Last),
            "next" => Ok(StreamStart::Next),
            other => parse_age(other)
                .map(|ms| StreamStart::Timestamp(now_ms.saturating_sub(ms) as i64))
                .ok_or_else(|| {
                    CoreError::PreconditionFailed(format!(
                        "Invalid value for x-stream-offset: {other}"
                    ))
                }),
        };
    }
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(StreamStart::Offset(n as u64)),
        _ => Err(CoreError::PreconditionFailed(format!(
            "Invalid value for x-stream-offset: {v:?}"
        ))),
    }
}

/// A stream kept in memory: for brokers without a store, and tests.
#[derive(Default)]
pub struct MemoryStream {
    records: Arc<Mutex<MemoryState>>,
}

#[derive(Default)]
struct MemoryState {
    first: u64,
    records: Vec<StreamRecord>,
    destroyed: bool,
    waiting: Vec<(u64, Box<dyn FnOnce() + Send>)>,
}

impl MemoryState {
    fn end(&self) -> u64 {
        self.first + self.records.len() as u64
    }
}

impl StreamLog for MemoryStream {
    fn append(&self, timestamp_ms: i64, filter: Option<&[u8]>, payload: &[u8]) -> Option<u64> {
        let waiting = {
            let mut st = self.records.lock();
            if st.destroyed {
                return None;
            }
            let offset = st.end();
            st.records.push(StreamRecord {
                offset,
                timestamp_ms,
                filter: filter.map(Bytes::copy_from_slice),
                payload: Bytes::copy_from_slice(payload),
            });
            std::mem::take(&mut st.waiting)
        };
        for (_, w) in waiting {
            w();
        }
        Some(self.records.lock().end() - 1)
    }

    fn when_durable(&self, done: Box<dyn FnOnce() + Send>) {
        done();
    }

    fn on_commit(&self, offset: u64, wake: Box<dyn FnOnce() + Send>) {
        let mut st = self.records.lock();
        if st.end() > offset || st.destroyed {
            drop(st);
            wake();
        } else {
            st.waiting.push((offset, wake));
        }
    }

    fn reader(&self, start: StreamStart) -> Box<dyn StreamCursor> {
        let st = self.records.lock();
        let next = match start {
            StreamStart::First => st.first,
            StreamStart::Last => st.end().saturating_sub(1).max(st.first),
            StreamStart::Next => st.end(),
            StreamStart::Offset(o) => o.max(st.first),
            StreamStart::Timestamp(t) => st
                .records
                .iter()
                .find(|r| r.timestamp_ms >= t)
                .map_or(st.end(), |r| r.offset),
        };
        Box::new(MemoryCursor {
            records: self.records.clone(),
            next,
        })
    }

    fn stats(&self) -> StreamStats {
        let st = self.records.lock();
        StreamStats {
            first_offset: st.first,
            committed: st.end(),
            records: st.records.len() as u64,
            bytes: st.records.iter().map(|r| r.payload.len() as u64).sum(),
        }
    }

    fn tick(&self, _now_ms: u64) {}

    fn destroy(&self) {
        let mut st = self.records.lock();
        st.destroyed = true;
        st.records.clear();
    }

    fn is_destroyed(&self) -> bool {
        self.records.lock().destroyed
    }
}

struct MemoryCursor {
    records: Arc<Mutex<MemoryState>>,
    next: u64,
}

impl StreamCursor for MemoryCursor {
    fn next_offset(&self) -> u64 {
        self.next
    }

    fn read(&mut self, max_records: usize, _max_bytes: usize) -> Vec<StreamRecord> {
        let st = self.records.lock();
        self.next = self.next.max(st.first);
        let from = (self.next - st.first) as usize;
        let out: Vec<StreamRecord> = st
            .records
            .iter()
            .skip(from)
            .take(max_records)
            .cloned()
            .collect();
        if let Some(last) = out.last() {
            self.next = last.offset + 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_offsets_parse_as_rabbitmq_does() {
        assert_eq!(parse_age("7D"), Some(7 * 86_400_000));
        assert_eq!(parse_age("1h"), Some(3_600_000));
        assert_eq!(parse_age("30m"), Some(1_800_000));
        assert_eq!(parse_age("10s"), Some(10_000));
        assert_eq!(parse_age("1Y"), Some(365 * 86_400_000));
        assert_eq!(parse_age("1M"), Some(30 * 86_400_000));
        assert_eq!(parse_age("1x"), None);
        assert_eq!(parse_age("h"), None);
        let s = |t: &'static str| Value::LongStr(Bytes::from_static(t.as_bytes()));
        assert_eq!(parse_start(None, 0).unwrap(), StreamStart::Next);
        assert_eq!(
            parse_start(Some(&s("first")), 0).unwrap(),
            StreamStart::First
        );
        assert_eq!(
            parse_start(Some(&Value::I64(5)), 0).unwrap(),
            StreamStart::Offset(5)
        );
        assert_eq!(
            parse_start(Some(&Value::Timestamp(10)), 0).unwrap(),
            StreamStart::Timestamp(10_000)
        );
        assert_eq!(
            parse_start(Some(&s("1s")), 5_000).unwrap(),
            StreamStart::Timestamp(4_000)
        );
        assert!(parse_start(Some(&s("bogus")), 0).is_err());
        assert!(parse_start(Some(&Value::I64(-1)), 0).is_err());
    }

    #[test]
    fn memory_stream_reads_from_offsets() {
        let m = MemoryStream::default();
        for i in 0..5u8 {
            assert_eq!(m.append(i as i64 * 10, None, &[i]), Some(i as u64));
        }
        assert_eq!(m.reader(StreamStart::First).read(10, 0).len(), 5);
        assert_eq!(m.reader(StreamStart::Last).read(10, 0)[0].offset, 4);
        assert!(m.reader(StreamStart::Next).read(10, 0).is_empty());
        assert_eq!(
            m.reader(StreamStart::Timestamp(25)).read(10, 0)[0].offset,
            3
        );
        assert_eq!(m.stats().records, 5);
    }
}
