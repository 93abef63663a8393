//! Response bodies, encoded at the request's version. [`frame_response`] adds the size prefix
//! and the response header (v0: the correlation id; no tagged fields, since the only flexible
//! API we serve, ApiVersions, always answers with header v0).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{SUPPORTED, code};
use crate::wire::{
    put_array_len, put_bytes, put_empty_tags, put_nullable_bytes, put_nullable_string, put_string,
};

/// Wraps an encoded body: size, correlation id, body.
pub fn frame_response(correlation_id: i32, body: &[u8], out: &mut BytesMut) {
    out.reserve(8 + body.len());
    out.put_i32(body.len() as i32 + 4);
    out.put_i32(correlation_id);
    out.put_slice(body);
}

fn s(out: &mut BytesMut, v: &str) {
    put_string(out, v, false);
}

fn ns(out: &mut BytesMut, v: Option<&str>) {
    put_nullable_string(out, v, false);
}

fn arr(out: &mut BytesMut, n: usize) {
    put_array_len(out, Some(n), false);
}

/// ApiVersions at `version`, listing [`SUPPORTED`]. With an error (an unsupported
/// ApiVersions version) the body is always v0's, as Kafka answers, so any client can read it.
pub fn api_versions(version: i16, error: i16, out: &mut BytesMut) {
    out.put_i16(error);
    let flexible = version >= 3 && error == code::NONE;
    put_array_len(out, Some(SUPPORTED.len()), flexible);
    for &(key, min, max) in SUPPORTED {
        out.put_i16(key);
        out.put_i16(min);
        out.put_i16(max);
        if flexible {
            put_empty_tags(out);
        }
    }
    if error != code::NONE {
        return;
    }
    if version >= 1 {
        out.put_i32(0);
    }
    if flexible {
        put_empty_tags(out);
    }
}

/// The body of an answer to an API or version we do not serve: the error code where every
/// response of the classic APIs has its throttle time or first field, so a client reading it
/// sees UNSUPPORTED_VERSION (35) rather than a dropped connection.
pub fn unsupported(out: &mut BytesMut) {
    out.put_i16(code::UNSUPPORTED_VERSION);
}

/// A broker in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Its node id.
    pub node_id: i32,
    /// The host clients connect to.
    pub host: String,
    /// The port.
    pub port: i32,
}

/// A topic in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataTopic {
    /// Topic error.
    pub error: i16,
    /// The name.
    pub name: String,
    /// Number of partitions (all led by `leader`).
    pub partitions: i32,
}

/// Metadata.
pub fn metadata(
    version: i16,
    broker: &Broker,
    cluster_id: &str,
    topics: &[MetadataTopic],
    out: &mut BytesMut,
) {
    if version >= 3 {
        out.put_i32(0);
    }
    arr(out, 1);
    out.put_i32(broker.node_id);
    s(out, &broker.host);
    out.put_i32(broker.port);
    if version >= 1 {
        ns(out, None);
    }
    if version >= 2 {
        ns(out, Some(cluster_id));
    }
    if version >= 1 {
        out.put_i32(broker.node_id);
    }
    arr(out, topics.len());
    for t in topics {
        out.put_i16(t.error);
        s(out, &t.name);
        if version >= 1 {
            out.put_u8(0);
        }
        arr(out, t.partitions.max(0) as usize);
        for p in 0..t.partitions.max(0) {
            out.put_i16(code::NONE);
            out.put_i32(p);
            out.put_i32(broker.node_id);
            if version >= 7 {
                out.put_i32(-1);
            }
            arr(out, 1);
            out.put_i32(broker.node_id);
            arr(out, 1);
            out.put_i32(broker.node_id);
            if version >= 5 {
                arr(out, 0);
            }
        }
        if version >= 8 {
            out.put_i32(i32::MIN);
        }
    }
    if version >= 8 {
        out.put_i32(i32::MIN);
    }
}

/// One partition's answer to a Produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartitionResponse {
    /// The partition.
    pub index: i32,
    /// Its error.
    pub error: i16,
    /// The offset of the first record appended.
    pub base_offset: i64,
    /// The partition's first retained offset.
    pub log_start_offset: i64,
    /// An error message (v8+).
    pub message: Option<String>,
}

/// Produce.
pub fn produce(
    version: i16,
    topics: &[(String, Vec<ProducePartitionResponse>)],
    out: &mut BytesMut,
) {
    arr(out, topics.len());
    for (name, parts) in topics {
        s(out, name);
        arr(out, parts.len());
        for p in parts {
            out.put_i32(p.index);
            out.put_i16(p.error);
            out.put_i64(p.base_offset);
            out.put_i64(-1); // log append time: CreateTime topics
            if version >= 5 {
                out.put_i64(p.log_start_offset);
            }
            if version >= 8 {
                arr(out, 0);
                ns(out, p.message.as_deref());
            }
        }
    }
    out.put_i32(0);
}

/// One partition's answer to a Fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartitionResponse {
    /// The partition.
    pub partition: i32,
    /// Its error.
    pub error: i16,
    /// One past the last readable offset.
    pub high_watermark: i64,
    /// The first retained offset.
    pub log_start_offset: i64,
    /// Record batches.
    pub records: Bytes,
}

/// Fetch.
pub fn fetch(version: i16, topics: &[(String, Vec<FetchPartitionResponse>)], out: &mut BytesMut) {
    out.put_i32(0);
    if version >= 7 {
        out.put_i16(code::NONE);
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, parts) in topics {
        s(out, name);
        arr(out, parts.len());
        for p in parts {
            out.put_i32(p.partition);
            out.put_i16(p.error);
            out.put_i64(p.high_watermark);
            out.put_i64(p.high_watermark); // last stable offset
            if version >= 5 {
                out.put_i64(p.log_start_offset);
            }
            put_array_len(out, None, false); // aborted transactions
            if version >= 11 {
                out.put_i32(-1);
            }
            put_nullable_bytes(out, Some(&p.records), false);
        }
    }
}

/// One partition's ListOffsets answer: `(partition, error, timestamp, offset)`.
pub type ListedOffset = (i32, i16, i64, i64);

/// ListOffsets.
pub fn list_offsets(version: i16, topics: &[(String, Vec<ListedOffset>)], out: &mut BytesMut) {
    if version >= 2 {
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, parts) in topics {
        s(out, name);
        arr(out, parts.len());
        for &(p, error, ts, offset) in parts {
            out.put_i32(p);
            out.put_i16(error);
            out.put_i64(ts);
            out.put_i64(offset);
            if version >= 4 {
                out.put_i32(-1);
            }
        }
    }
}

/// FindCoordinator.
pub fn find_coordinator(version: i16, error: i16, broker: &Broker, out: &mut BytesMut) {
    if version >= 1 {
        out.put_i32(0);
    }
    out.put_i16(error);
    if version >= 1 {
        ns(out, None);
    }
    out.put_i32(broker.node_id);
    s(out, &broker.host);
    out.put_i32(broker.port);
}

/// JoinGroup's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupResponse {
    /// The error.
    pub error: i16,
    /// The new generation.
    pub generation_id: i32,
    /// The chosen assignor.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// The member's id.
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen assignor.
    pub members: Vec<(String, Bytes)>,
}

/// JoinGroup.
pub fn join_group(version: i16, r: &JoinGroupResponse, out: &mut BytesMut) {
    if version >= 2 {
        out.put_i32(0);
    }
    out.put_i16(r.error);
    out.put_i32(r.generation_id);
    s(out, &r.protocol_name);
    s(out, &r.leader);
    s(out, &r.member_id);
    arr(out, r.members.len());
    for (id, meta) in &r.members {
        s(out, id);
        if version >= 5 {
            ns(out, None);
        }
        put_bytes(out, meta, false);
    }
}

/// SyncGroup.
pub fn sync_group(version: i16, error: i16, assignment: &[u8], out: &mut BytesMut) {
    if version >= 1 {
        out.put_i32(0);
    }
    out.put_i16(error);
    put_bytes(out, assignment, false);
}

/// Heartbeat.
pub fn heartbeat(version: i16, error: i16, out: &mut BytesMut) {
    if version >= 1 {
        out.put_i32(0);
    }
    out.put_i16(error);
}

/// LeaveGroup: the overall error and, for v3+, each member's.
pub fn leave_group(version: i16, error: i16, members: &[(String, i16)], out: &mut BytesMut) {
    if version >= 1 {
        out.put_i32(0);
    }
    out.put_i16(error);
    if version >= 3 {
        arr(out, members.len());
        for (m, e) in members {
            s(out, m);
            ns(out, None);
            out.put_i16(*e);
        }
    }
}

/// OffsetCommit: topics and `(partition, error)`.
pub fn offset_commit(version: i16, topics: &[(String, Vec<(i32, i16)>)], out: &mut BytesMut) {
    if version >= 3 {
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, parts) in topics {
        s(out, name);
        arr(out, parts.len());
        for &(p, e) in parts {
            out.put_i32(p);
            out.put_i16(e);
        }
    }
}

/// One partition's committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    /// The partition.
    pub partition: i32,
    /// The committed offset (-1: none).
    pub offset: i64,
    /// Its metadata.
    pub metadata: Option<String>,
    /// The error.
    pub error: i16,
}

/// OffsetFetch.
pub fn offset_fetch(
    version: i16,
    error: i16,
    topics: &[(String, Vec<FetchedOffset>)],
    out: &mut BytesMut,
) {
    if version >= 3 {
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, parts) in topics {
        s(out, name);
        arr(out, parts.len());
        for p in parts {
            out.put_i32(p.partition);
            out.put_i64(p.offset);
            if version >= 5 {
                out.put_i32(-1);
            }
            ns(out, Some(p.metadata.as_deref().unwrap_or("")));
            out.put_i16(p.error);
        }
    }
    if version >= 2 {
        out.put_i16(error);
    }
}

/// CreateTopics: `(name, error, message)`.
pub fn create_topics(version: i16, topics: &[(String, i16, Option<String>)], out: &mut BytesMut) {
    if version >= 2 {
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, e, msg) in topics {
        s(out, name);
        out.put_i16(*e);
        if version >= 1 {
            ns(out, msg.as_deref());
        }
    }
}

/// DeleteTopics: `(name, error)`.
pub fn delete_topics(version: i16, topics: &[(String, i16)], out: &mut BytesMut) {
    if version >= 1 {
        out.put_i32(0);
    }
    arr(out, topics.len());
    for (name, e) in topics {
        s(out, name);
        out.put_i16(*e);
    }
}

/// One described resource: error, type, name and `(config name, value, is default)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedResource {
    /// The error.
    pub error: i16,
    /// The error message.
    pub message: Option<String>,
    /// Resource type (2: topic, 4: broker).
    pub kind: i8,
    /// Its name.
    pub name: String,
    /// Configs: name, value, whether it is the default.
    pub configs: Vec<(String, Option<String>, bool)>,
}

/// DescribeConfigs.
pub fn describe_configs(version: i16, resources: &[DescribedResource], out: &mut BytesMut) {
    out.put_i32(0);
    arr(out, resources.len());
    for r in resources {
        out.put_i16(r.error);
        ns(out, r.message.as_deref());
        out.put_i8(r.kind);
        s(out, &r.name);
        arr(out, r.configs.len());
        for (name, value, default) in &r.configs {
            s(out, name);
            ns(out, value.as_deref());
            out.put_u8(1); // read only
            if version == 0 {
                out.put_u8(u8::from(*default));
            } else {
                // DEFAULT_CONFIG (5) or DYNAMIC_TOPIC_CONFIG (1).
                out.put_i8(if *default { 5 } else { 1 });
            }
            out.put_u8(0); // sensitive
            if version >= 1 {
                arr(out, 0);
            }
            if version >= 3 {
                out.put_i8(if name.ends_with(".ms") || name.ends_with(".bytes") {
                    5
                } else {
                    2
                });
                ns(out, None);
            }
        }
    }
}

/// SaslHandshake.
pub fn sasl_handshake(error: i16, mechanisms: &[&str], out: &mut BytesMut) {
    out.put_i16(error);
    arr(out, mechanisms.len());
    for m in mechanisms {
        s(out, m);
    }
}

/// SaslAuthenticate.
pub fn sasl_authenticate(
    version: i16,
    error: i16,
    message: Option<&str>,
    data: &[u8],
    out: &mut BytesMut,
) {
    out.put_i16(error);
    ns(out, message);
    put_bytes(out, data, false);
    if version >= 1 {
        out.put_i64(0);
    }
}
