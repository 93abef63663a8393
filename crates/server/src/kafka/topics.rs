//! Kafka topics as stream queues: `t` (one partition) or `t-0`..`t-(N-1)`, in `[kafka] vhost`.
//! Metadata, CreateTopics, DeleteTopics and DescribeConfigs.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::BytesMut;
use tributary_core::{Queue, QueueOptions, Table, VHost, Value};
use tributary_kafka::code;
use tributary_kafka::request::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, MetadataRequest,
};
use tributary_kafka::response::{self, DescribedResource, MetadataTopic};

use super::Conn;
use crate::users::Access;

/// Most partitions one topic may have.
const MAX_PARTITIONS: i32 = 1024;

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The stream queue name of a partition.
pub fn stream_name(topic: &str, partitions: usize, partition: i32) -> String {
    if partitions == 1 {
        topic.to_owned()
    } else {
        format!("{topic}-{partition}")
    }
}

fn stream(vhost: &VHost, name: &str, conn: u64) -> Option<Arc<Queue>> {
    vhost
        .queue(name, conn)
        .ok()
        .filter(|q| q.is_stream() && q.stream().is_some())
}

/// The partitions of a topic, in order, if it exists.
pub fn find(vhost: &VHost, topic: &str, conn: u64) -> Option<Vec<Arc<Queue>>> {
    if let Some(q) = stream(vhost, topic, conn) {
        return Some(vec![q]);
    }
    let mut parts = Vec::new();
    while let Some(q) = stream(vhost, &format!("{topic}-{}", parts.len()), conn) {
        parts.push(q);
        if parts.len() as i32 >= MAX_PARTITIONS {
            break;
        }
    }
    (!parts.is_empty()).then_some(parts)
}

/// Every topic of the vhost: each stream is a one-partition topic, except runs `t-0..t-(N-1)`
/// with no stream `t`, which are topic `t` with N partitions.
pub fn all(vhost: &VHost) -> BTreeMap<String, i32> {
    let names: std::collections::BTreeSet<String> = vhost
        .queues()
        .into_iter()
        .filter(|q| q.is_stream())
        .map(|q| q.name().to_owned())
        .collect();
    let mut out = BTreeMap::new();
    let mut grouped = std::collections::HashSet::new();
    for name in &names {
        if let Some((base, "0")) = name.rsplit_once('-')
            && !names.contains(base)
        {
            let mut n = 0;
            while names.contains(&format!("{base}-{n}")) {
                grouped.insert(format!("{base}-{n}"));
                n += 1;
            }
            out.insert(base.to_owned(), n);
        }
    }
    for name in names {
        if !grouped.contains(&name) {
            out.insert(name, 1);
        }
    }
    out
}

/// Queue arguments of a new topic's streams from Kafka topic configs.
fn stream_arguments(configs: &[(String, Option<String>)]) -> Result<Table, String> {
    let mut args = Table::default();
    args.insert("x-queue-type", Value::LongStr("stream".into()));
    for (name, value) in configs {
        let Some(value) = value else { continue };
        let n: i64 = value
            .parse()
            .map_err(|_| format!("{name} must be a number, not {value}"))?;
        match name.as_str() {
            "retention.ms" if n >= 0 => args.insert(
                "x-max-age",
                Value::LongStr(format!("{}s", (n + 999) / 1000).into()),
            ),
            "retention.bytes" if n >= 0 => args.insert("x-max-length-bytes", Value::I64(n)),
            "retention.ms" | "retention.bytes" => {}
            "segment.bytes" if n > 0 => {
                args.insert("x-stream-max-segment-size-bytes", Value::I64(n))
            }
            _ => return Err(format!("unsupported topic config {name}")),
        }
    }
    Ok(args)
}

impl Conn {
    /// Creates a topic's streams; `Err` carries the Kafka error and a message.
    pub(super) fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(String, Option<String>)],
        validate_only: bool,
    ) -> Result<Vec<Arc<Queue>>, (i16, String)> {
        if !valid_name(topic) {
            return Err((
                code::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {topic:?}"),
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err((
                code::INVALID_PARTITIONS,
                format!("partitions must be 1 to {MAX_PARTITIONS}"),
            ));
        }
        let Some(vhost) = self.ctx.broker.vhost(self.vhost()) else {
            return Err((code::UNKNOWN_SERVER_ERROR, "no such vhost".into()));
        };
        if find(&vhost, topic, self.conn_id).is_some() {
            return Err((
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {topic} already exists"),
            ));
        }
        let names: Vec<String> = (0..partitions)
            .map(|p| stream_name(topic, partitions as usize, p))
            .collect();
        if let Some(n) = names.iter().find(|n| !self.may(Access::Configure, n)) {
            return Err((
                code::TOPIC_AUTHORIZATION_FAILED,
                format!("configure access to queue '{n}' refused"),
            ));
        }
        let arguments = stream_arguments(configs).map_err(|m| (code::INVALID_CONFIG, m))?;
        if validate_only {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for name in names {
            let options = QueueOptions {
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: arguments.clone(),
            };
            match vhost.declare_queue(&name, false, options, self.conn_id) {
                Ok(d) => out.push(d.queue),
                Err(e) => return Err((code::INVALID_CONFIG, e.to_string())),
            }
        }
        tracing::info!(
            topic,
            partitions,
            vhost = self.vhost(),
            "Kafka topic created"
        );
        Ok(out)
    }

    /// A topic's partitions, created with one partition when auto-creation is on and allowed.
    pub(super) fn topic(&self, topic: &str, auto_create: bool) -> Result<Vec<Arc<Queue>>, i16> {
        let vhost = self
            .ctx
            .broker
            .vhost(self.vhost())
            .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)?;
        if let Some(parts) = find(&vhost, topic, self.conn_id) {
            return Ok(parts);
        }
        if !(auto_create && self.ctx.config.auto_create_topics) {
            return Err(code::UNKNOWN_TOPIC_OR_PARTITION);
        }
        match self.create_topic(topic, 1, &[], false) {
            Ok(parts) => Ok(parts),
            // Created by another connection meanwhile.
            Err((code::TOPIC_ALREADY_EXISTS, _)) => {
                find(&vhost, topic, self.conn_id).ok_or(code::UNKNOWN_TOPIC_OR_PARTITION)
            }
            Err((e, _)) => Err(e),
        }
    }

    pub(super) fn metadata(&self, v: i16, r: MetadataRequest, out: &mut BytesMut) {
        let topics: Vec<MetadataTopic> = match r.topics {
            None => self
                .ctx
                .broker
                .vhost(self.vhost())
                .map(|vh| all(&vh))
                .unwrap_or_default()
                .into_iter()
                .filter(|(name, n)| {
                    self.may(Access::Read, &stream_name(name, *n as usize, 0))
                        || self.may(Access::Write, &stream_name(name, *n as usize, 0))
                })
                .map(|(name, partitions)| MetadataTopic {
                    error: code::NONE,
                    name,
                    partitions,
                })
                .collect(),
            Some(names) => names
                .into_iter()
                .map(|name| {
                    let found = if valid_name(&name) {
                        self.topic(&name, r.allow_auto_topic_creation)
                    } else {
                        Err(code::INVALID_TOPIC_EXCEPTION)
                    };
                    match found {
                        Ok(parts) => MetadataTopic {
                            error: code::NONE,
                            name,
                            partitions: parts.len() as i32,
                        },
                        Err(error) => MetadataTopic {
                            error,
                            name,
                            partitions: 0,
                        },
                    }
                })
                .collect(),
        };
        response::metadata(v, &self.broker_addr(), "tributary", &topics, out);
    }

    pub(super) fn create_topics(&self, v: i16, r: CreateTopicsRequest, out: &mut BytesMut) {
        let results: Vec<(String, i16, Option<String>)> = r
            .topics
            .into_iter()
            .map(|t| {
                let partitions = if t.num_partitions == -1 {
                    1
                } else {
                    t.num_partitions
                };
                let result = if t.assignments > 0 {
                    Err((
                        code::INVALID_REQUEST,
                        "manual partition assignments are not supported".into(),
                    ))
                } else if !matches!(t.replication_factor, -1 | 1) {
                    Err((
                        code::INVALID_REPLICATION_FACTOR,
                        "replication factor must be 1 (one broker)".into(),
                    ))
                } else {
                    self.create_topic(&t.name, partitions, &t.configs, r.validate_only)
                };
                match result {
                    Ok(_) => (t.name, code::NONE, None),
                    Err((e, m)) => (t.name, e, Some(m)),
                }
            })
            .collect();
        response::create_topics(v, &results, out);
    }

    pub(super) fn delete_topics(&self, v: i16, r: DeleteTopicsRequest, out: &mut BytesMut) {
        let vhost = self.ctx.broker.vhost(self.vhost());
        let results: Vec<(String, i16)> = r
            .topics
            .into_iter()
            .map(|name| {
                let Some(parts) = vhost.as_ref().and_then(|vh| find(vh, &name, self.conn_id))
                else {
                    return (name, code::UNKNOWN_TOPIC_OR_PARTITION);
                };
                if parts.iter().any(|q| !self.may(Access::Configure, q.name())) {
                    return (name, code::TOPIC_AUTHORIZATION_FAILED);
                }
                if let Some(vh) = &vhost {
                    for q in &parts {
                        vh.remove_queue(q);
                    }
                }
                self.ctx.groups.forget_topic(self.vhost(), &name);
                tracing::info!(topic = name, vhost = self.vhost(), "Kafka topic deleted");
                (name, code::NONE)
            })
            .collect();
        response::delete_topics(v, &results, out);
    }

    pub(super) fn describe_configs(&self, v: i16, r: DescribeConfigsRequest, out: &mut BytesMut) {
        let vhost = self.ctx.broker.vhost(self.vhost());
        let results: Vec<DescribedResource> = r
            .resources
            .into_iter()
            .map(|(kind, name, keys)| {
                let mut res = DescribedResource {
                    error: code::NONE,
                    message: None,
                    kind,
                    name: name.clone(),
                    configs: Vec::new(),
                };
                let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
                match kind {
                    2 => {
                        let Some(q) = vhost
                            .as_ref()
                            .and_then(|vh| find(vh, &name, self.conn_id))
                            .and_then(|p| p.into_iter().next())
                        else {
                            res.error = code::UNKNOWN_TOPIC_OR_PARTITION;
                            return res;
                        };
                        let s = q
                            .args()
                            .stream
                            .unwrap_or(tributary_core::stream::StreamSettings {
                                max_bytes: None,
                                max_age_ms: None,
                                max_segment_bytes:
                                    tributary_core::stream::DEFAULT_MAX_SEGMENT_BYTES,
                            });
                        let configs = [
                            ("retention.ms", s.max_age_ms.map(|m| m as i64)),
                            ("retention.bytes", s.max_bytes.map(|b| b as i64)),
                            ("segment.bytes", Some(s.max_segment_bytes as i64)),
                        ];
                        for (k, value) in configs {
                            if wanted(k) {
                                let default = value.is_none();
                                res.configs.push((
                                    k.into(),
                                    Some(value.unwrap_or(-1).to_string()),
                                    default,
                                ));
                            }
                        }
                        res.configs
                            .push(("cleanup.policy".into(), Some("delete".into()), true));
                        res.configs.retain(|(k, _, _)| wanted(k));
                    }
                    _ => {
                        res.error = code::INVALID_REQUEST;
                        res.message = Some("only topic configs are described".into());
                    }
                }
                res
            })
            .collect();
        response::describe_configs(v, &results, out);
    }
}
