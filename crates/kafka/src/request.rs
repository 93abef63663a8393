//! Request bodies of the APIs we serve, decoded at the version the header names. Each field's
//! presence follows the protocol's JSON schemas (`clients/src/main/resources/common/message`).

use bytes::Bytes;

use crate::DecodeError;
use crate::protocol::{RequestHeader, api, is_flexible};
use crate::wire::Reader;

type R<T> = Result<T, DecodeError>;

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// ApiVersions.
    ApiVersions,
    /// Metadata.
    Metadata(MetadataRequest),
    /// Produce.
    Produce(ProduceRequest),
    /// Fetch.
    Fetch(FetchRequest),
    /// ListOffsets.
    ListOffsets(ListOffsetsRequest),
    /// FindCoordinator.
    FindCoordinator(FindCoordinatorRequest),
    /// JoinGroup.
    JoinGroup(JoinGroupRequest),
    /// SyncGroup.
    SyncGroup(SyncGroupRequest),
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup.
    LeaveGroup(LeaveGroupRequest),
    /// OffsetCommit.
    OffsetCommit(OffsetCommitRequest),
    /// OffsetFetch.
    OffsetFetch(OffsetFetchRequest),
    /// CreateTopics.
    CreateTopics(CreateTopicsRequest),
    /// DeleteTopics.
    DeleteTopics(DeleteTopicsRequest),
    /// DescribeConfigs.
    DescribeConfigs(DescribeConfigsRequest),
    /// SaslHandshake.
    SaslHandshake(String),
    /// SaslAuthenticate: the mechanism's bytes.
    SaslAuthenticate(Bytes),
    /// An API or version we do not serve: answered with UNSUPPORTED_VERSION.
    Unsupported,
}

/// Metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataRequest {
    /// The topics asked about; `None` means all topics.
    pub topics: Option<Vec<String>>,
    /// Whether missing topics may be created (v4+; always true before).
    pub allow_auto_topic_creation: bool,
}

/// One partition's records in a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    /// The partition.
    pub index: i32,
    /// Its record batches, undecoded.
    pub records: Option<Bytes>,
}

/// Produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProduceRequest {
    /// Set by transactional producers (refused).
    pub transactional_id: Option<String>,
    /// 0: no answer; 1: after the append; -1: after the append is durable.
    pub acks: i16,
    /// How long the client waits.
    pub timeout_ms: i32,
    /// Topics and their partitions.
    pub topics: Vec<(String, Vec<ProducePartition>)>,
}

/// One partition to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPartition {
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub fetch_offset: i64,
    /// At most this many bytes of this partition.
    pub partition_max_bytes: i32,
}

/// Fetch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchRequest {
    /// How long to wait for `min_bytes`.
    pub max_wait_ms: i32,
    /// Answer as soon as this many bytes are available.
    pub min_bytes: i32,
    /// At most this many bytes in all.
    pub max_bytes: i32,
    /// 0: read uncommitted; 1: read committed (the same here: no transactions).
    pub isolation_level: i8,
    /// Topics and partitions.
    pub topics: Vec<(String, Vec<FetchPartition>)>,
}

/// ListOffsets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOffsetsRequest {
    /// Topics and `(partition, timestamp)`: -2 earliest, -1 latest, else a time in ms.
    pub topics: Vec<(String, Vec<(i32, i64)>)>,
}

/// FindCoordinator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FindCoordinatorRequest {
    /// The group id (or transactional id).
    pub key: String,
    /// 0: group; 1: transaction.
    pub key_type: i8,
}

/// JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinGroupRequest {
    /// The group.
    pub group_id: String,
    /// Members not heard from for this long are removed.
    pub session_timeout_ms: i32,
    /// How long the coordinator waits for members to rejoin (v1+; the session timeout
    /// before).
    pub rebalance_timeout_ms: i32,
    /// Empty for a new member.
    pub member_id: String,
    /// Static membership (v5+; ignored).
    pub group_instance_id: Option<String>,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// The assignors the member supports, with its metadata for each, preferred first.
    pub protocols: Vec<(String, Bytes)>,
}

/// SyncGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroupRequest {
    /// The group.
    pub group_id: String,
    /// The generation the member joined.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
    /// The leader's assignment for each member (empty from followers).
    pub assignments: Vec<(String, Bytes)>,
}

/// Heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation.
    pub generation_id: i32,
    /// The member.
    pub member_id: String,
}

/// LeaveGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaveGroupRequest {
    /// The group.
    pub group_id: String,
    /// The members leaving (one before v3).
    pub members: Vec<String>,
}

/// One partition's offset in an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPartition {
    /// The partition.
    pub partition: i32,
    /// The next offset the group will read.
    pub offset: i64,
    /// The client's metadata string.
    pub metadata: Option<String>,
}

/// OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group_id: String,
    /// The member's generation (-1 for a commit from outside the group protocol).
    pub generation_id: i32,
    /// The member (empty from outside the group protocol).
    pub member_id: String,
    /// Topics and partitions.
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

/// OffsetFetch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OffsetFetchRequest {
    /// The group.
    pub group_id: String,
    /// Topics and partitions; `None` (v2+) means every committed one.
    pub topics: Option<Vec<(String, Vec<i32>)>>,
}

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreatableTopic {
    /// Its name.
    pub name: String,
    /// Partitions (-1: the default).
    pub num_partitions: i32,
    /// Replication factor (-1 or 1 here).
    pub replication_factor: i16,
    /// Manual assignments (refused when present).
    pub assignments: usize,
    /// Topic configs.
    pub configs: Vec<(String, Option<String>)>,
}

/// CreateTopics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTopicsRequest {
    /// The topics.
    pub topics: Vec<CreatableTopic>,
    /// How long the client waits.
    pub timeout_ms: i32,
    /// Check only (v1+).
    pub validate_only: bool,
}

/// DeleteTopics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteTopicsRequest {
    /// The topics.
    pub topics: Vec<String>,
    /// How long the client waits.
    pub timeout_ms: i32,
}

/// DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeConfigsRequest {
    /// `(resource type, name, keys)`: type 2 is a topic, 4 a broker; `None` keys mean all.
    pub resources: Vec<(i8, String, Option<Vec<String>>)>,
}

/// Reads `n` elements with `f`.
fn list<T>(r: &mut Reader, min: usize, mut f: impl FnMut(&mut Reader) -> R<T>) -> R<Vec<T>> {
    let n = r.array(false, min)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f(r)?);
    }
    Ok(out)
}

fn nullable_list<T>(
    r: &mut Reader,
    min: usize,
    mut f: impl FnMut(&mut Reader) -> R<T>,
) -> R<Option<Vec<T>>> {
    let Some(n) = r.nullable_array(false, min)? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(f(r)?);
    }
    Ok(Some(out))
}

fn string(r: &mut Reader) -> R<String> {
    r.string(false)
}

/// Decodes a whole request (header and body) from one frame's bytes. An API or version we do
/// not serve decodes to [`Request::Unsupported`] with its header, so that it can be answered.
pub fn decode_request(frame: Bytes) -> R<(RequestHeader, Request)> {
    let mut r = Reader::new(frame);
    let h = RequestHeader::decode(&mut r)?;
    if !h.is_supported() {
        return Ok((h, Request::Unsupported));
    }
    let v = h.api_version;
    let req = match h.api_key {
        api::API_VERSIONS => {
            if is_flexible(h.api_key, v) {
                let _name = r.string(true)?;
                let _version = r.string(true)?;
                r.tagged_fields()?;
            }
            Request::ApiVersions
        }
        api::METADATA => {
            let topics = if v == 0 {
                let t = list(&mut r, 2, string)?;
                (!t.is_empty()).then_some(t)
            } else {
                nullable_list(&mut r, 2, string)?
            };
            let allow_auto_topic_creation = if v >= 4 { r.bool()? } else { true };
            if v >= 8 {
                r.bool()?;
                r.bool()?;
            }
            Request::Metadata(MetadataRequest {
                topics,
                allow_auto_topic_creation,
            })
        }
        api::PRODUCE => {
            let transactional_id = r.nullable_string(false)?;
            let acks = r.i16()?;
            let timeout_ms = r.i32()?;
            let topics = list(&mut r, 6, |r| {
                let name = string(r)?;
                let parts = list(r, 8, |r| {
                    Ok(ProducePartition {
                        index: r.i32()?,
                        records: r.nullable_bytes(false)?,
                    })
                })?;
                Ok((name, parts))
            })?;
            Request::Produce(ProduceRequest {
                transactional_id,
                acks,
                timeout_ms,
                topics,
            })
        }
        api::FETCH => {
            let _replica = r.i32()?;
            let max_wait_ms = r.i32()?;
            let min_bytes = r.i32()?;
            let max_bytes = r.i32()?;
            let isolation_level = r.i8()?;
            if v >= 7 {
                let _session_id = r.i32()?;
                let _session_epoch = r.i32()?;
            }
            let topics = list(&mut r, 6, |r| {
                let name = string(r)?;
                let parts = list(r, 16, |r| {
                    let partition = r.i32()?;
                    if v >= 9 {
                        r.i32()?;
                    }
                    let fetch_offset = r.i64()?;
                    if v >= 5 {
                        r.i64()?;
                    }
                    Ok(FetchPartition {
                        partition,
                        fetch_offset,
                        partition_max_bytes: r.i32()?,
                    })
                })?;
                Ok((name, parts))
            })?;
            if v >= 7 {
                let _forgotten = list(&mut r, 6, |r| {
                    string(r)?;
                    list(r, 4, |r| r.i32())
                })?;
            }
            if v >= 11 {
                let _rack = string(&mut r)?;
            }
            Request::Fetch(FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                isolation_level,
                topics,
            })
        }
        api::LIST_OFFSETS => {
            let _replica = r.i32()?;
            if v >= 2 {
                r.i8()?;
            }
            let topics = list(&mut r, 6, |r| {
                let name = string(r)?;
                let parts = list(r, 12, |r| {
                    let p = r.i32()?;
                    if v >= 4 {
                        r.i32()?;
                    }
                    Ok((p, r.i64()?))
                })?;
                Ok((name, parts))
            })?;
            Request::ListOffsets(ListOffsetsRequest { topics })
        }
        api::FIND_COORDINATOR => {
            let key = string(&mut r)?;
            let key_type = if v >= 1 { r.i8()? } else { 0 };
            Request::FindCoordinator(FindCoordinatorRequest { key, key_type })
        }
        api::JOIN_GROUP => {
            let group_id = string(&mut r)?;
            let session_timeout_ms = r.i32()?;
            let rebalance_timeout_ms = if v >= 1 { r.i32()? } else { session_timeout_ms };
            let member_id = string(&mut r)?;
            let group_instance_id = if v >= 5 {
                r.nullable_string(false)?
            } else {
                None
            };
            let protocol_type = string(&mut r)?;
            let protocols = list(&mut r, 6, |r| Ok((string(r)?, r.bytes(false)?)))?;
            Request::JoinGroup(JoinGroupRequest {
                group_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                member_id,
                group_instance_id,
                protocol_type,
                protocols,
            })
        }
        api::SYNC_GROUP => {
            let group_id = string(&mut r)?;
            let generation_id = r.i32()?;
            let member_id = string(&mut r)?;
            if v >= 3 {
                r.nullable_string(false)?;
            }
            let assignments = list(&mut r, 6, |r| Ok((string(r)?, r.bytes(false)?)))?;
            Request::SyncGroup(SyncGroupRequest {
                group_id,
                generation_id,
                member_id,
                assignments,
            })
        }
        api::HEARTBEAT => {
            let group_id = string(&mut r)?;
            let generation_id = r.i32()?;
            let member_id = string(&mut r)?;
            if v >= 3 {
                r.nullable_string(false)?;
            }
            Request::Heartbeat(HeartbeatRequest {
                group_id,
                generation_id,
                member_id,
            })
        }
        api::LEAVE_GROUP => {
            let group_id = string(&mut r)?;
            let members = if v >= 3 {
                list(&mut r, 4, |r| {
                    let m = string(r)?;
                    r.nullable_string(false)?;
                    Ok(m)
                })?
            } else {
                vec![string(&mut r)?]
            };
            Request::LeaveGroup(LeaveGroupRequest { group_id, members })
        }
        api::OFFSET_COMMIT => {
            let group_id = string(&mut r)?;
            let generation_id = r.i32()?;
            let member_id = string(&mut r)?;
            if (2..=4).contains(&v) {
                let _retention = r.i64()?;
            }
            if v >= 7 {
                r.nullable_string(false)?;
            }
            let topics = list(&mut r, 6, |r| {
                let name = string(r)?;
                let parts = list(r, 14, |r| {
                    let partition = r.i32()?;
                    let offset = r.i64()?;
                    if v >= 6 {
                        r.i32()?;
                    }
                    Ok(CommitPartition {
                        partition,
                        offset,
                        metadata: r.nullable_string(false)?,
                    })
                })?;
                Ok((name, parts))
            })?;
            Request::OffsetCommit(OffsetCommitRequest {
                group_id,
                generation_id,
                member_id,
                topics,
            })
        }
        api::OFFSET_FETCH => {
            let group_id = string(&mut r)?;
            let read = |r: &mut Reader| Ok((string(r)?, list(r, 4, |r| r.i32())?));
            let topics = if v >= 2 {
                nullable_list(&mut r, 6, read)?
            } else {
                Some(list(&mut r, 6, read)?)
            };
            Request::OffsetFetch(OffsetFetchRequest { group_id, topics })
        }
        api::CREATE_TOPICS => {
            let topics = list(&mut r, 16, |r| {
                let name = string(r)?;
                let num_partitions = r.i32()?;
                let replication_factor = r.i16()?;
                let assignments = list(r, 8, |r| {
                    r.i32()?;
                    list(r, 4, |r| r.i32())
                })?
                .len();
                let configs = list(r, 4, |r| Ok((string(r)?, r.nullable_string(false)?)))?;
                Ok(CreatableTopic {
                    name,
                    num_partitions,
                    replication_factor,
                    assignments,
                    configs,
                })
            })?;
            let timeout_ms = r.i32()?;
            let validate_only = if v >= 1 { r.bool()? } else { false };
            Request::CreateTopics(CreateTopicsRequest {
                topics,
                timeout_ms,
                validate_only,
            })
        }
        api::DELETE_TOPICS => {
            let topics = list(&mut r, 2, string)?;
            let timeout_ms = r.i32()?;
            Request::DeleteTopics(DeleteTopicsRequest { topics, timeout_ms })
        }
        api::DESCRIBE_CONFIGS => {
            let resources = list(&mut r, 7, |r| {
                let kind = r.i8()?;
                let name = string(r)?;
                let keys = nullable_list(r, 2, string)?;
                Ok((kind, name, keys))
            })?;
            if v >= 1 {
                r.bool()?;
            }
            if v >= 3 {
                r.bool()?;
            }
            Request::DescribeConfigs(DescribeConfigsRequest { resources })
        }
        api::SASL_HANDSHAKE => Request::SaslHandshake(string(&mut r)?),
        api::SASL_AUTHENTICATE => Request::SaslAuthenticate(r.bytes(false)?),
        _ => Request::Unsupported,
    };
    Ok((h, req))
}
