//! API keys, the versions we serve, error codes, and the request and response headers.

use bytes::{BufMut, BytesMut};

use crate::DecodeError;
use crate::wire::{Reader, put_empty_tags};

/// Declares the API keys with the version range we serve (`(min, max)`).
macro_rules! apis {
    ($($(#[$doc:meta])* $name:ident = $key:expr, $min:expr, $max:expr;)*) => {
        /// Kafka API keys (the first field of every request header).
        pub mod api {
            $($(#[$doc])* pub const $name: i16 = $key;)*
        }
        /// `(api key, min version, max version)` for every API we answer: what ApiVersions
        /// tells clients. Every range stays below the API's first flexible version except
        /// ApiVersions itself (v3 is flexible), which kafka-python 2.x and librdkafka 2.x both
        /// accept: they pick the highest version both sides know.
        pub const SUPPORTED: &[(i16, i16, i16)] = &[$(($key, $min, $max),)*];
    };
}

apis! {
    /// Produce.
    PRODUCE = 0, 3, 8;
    /// Fetch.
    FETCH = 1, 4, 11;
    /// ListOffsets.
    LIST_OFFSETS = 2, 1, 5;
    /// Metadata.
    METADATA = 3, 0, 8;
    /// OffsetCommit.
    OFFSET_COMMIT = 8, 2, 7;
    /// OffsetFetch.
    OFFSET_FETCH = 9, 1, 5;
    /// FindCoordinator.
    FIND_COORDINATOR = 10, 0, 2;
    /// JoinGroup.
    JOIN_GROUP = 11, 0, 5;
    /// Heartbeat.
    HEARTBEAT = 12, 0, 3;
    /// LeaveGroup.
    LEAVE_GROUP = 13, 0, 3;
    /// SyncGroup.
    SYNC_GROUP = 14, 0, 3;
    /// SaslHandshake (v1 only: v0's unframed tokens are not supported).
    SASL_HANDSHAKE = 17, 1, 1;
    /// ApiVersions.
    API_VERSIONS = 18, 0, 3;
    /// CreateTopics.
    CREATE_TOPICS = 19, 0, 4;
    /// DeleteTopics.
    DELETE_TOPICS = 20, 0, 3;
    /// DescribeConfigs.
    DESCRIBE_CONFIGS = 32, 0, 3;
    /// SaslAuthenticate.
    SASL_AUTHENTICATE = 36, 0, 1;
}

/// The version range we serve for `api_key`, if we serve it.
pub fn supported(api_key: i16) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api_key)
        .map(|&(_, min, max)| (min, max))
}

/// Declares error codes with the protocol's description as the doc string.
macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        /// Kafka error codes used by this broker.
        pub mod code {
            $($(#[$doc])* pub const $name: i16 = $code;)*
        }
    };
}

codes! {
    /// The server experienced an unexpected error when processing the request.
    UNKNOWN_SERVER_ERROR = -1;
    /// No error.
    NONE = 0;
    /// The requested offset is not within the range of offsets maintained by the server.
    OFFSET_OUT_OF_RANGE = 1;
    /// This message has failed its CRC checksum, exceeds the valid size, has a null key for a
    /// compacted topic, or is otherwise corrupt.
    CORRUPT_MESSAGE = 2;
    /// This server does not host this topic-partition.
    UNKNOWN_TOPIC_OR_PARTITION = 3;
    /// The request timed out.
    REQUEST_TIMED_OUT = 7;
    /// The request included a message larger than the max message size the server will accept.
    MESSAGE_TOO_LARGE = 10;
    /// The coordinator is not available.
    COORDINATOR_NOT_AVAILABLE = 15;
    /// The request attempted to perform an operation on an invalid topic.
    INVALID_TOPIC_EXCEPTION = 17;
    /// Specified group generation id is not valid.
    ILLEGAL_GENERATION = 22;
    /// The group member's supported protocols are incompatible with those of existing members
    /// or first group member tried to join with empty protocol type or empty protocol list.
    INCONSISTENT_GROUP_PROTOCOL = 23;
    /// The configured groupId is invalid.
    INVALID_GROUP_ID = 24;
    /// The coordinator is not aware of this member.
    UNKNOWN_MEMBER_ID = 25;
    /// The session timeout is not within the range allowed by the broker.
    INVALID_SESSION_TIMEOUT = 26;
    /// The group is rebalancing, so a rejoin is needed.
    REBALANCE_IN_PROGRESS = 27;
    /// Topic authorization failed.
    TOPIC_AUTHORIZATION_FAILED = 29;
    /// Group authorization failed.
    GROUP_AUTHORIZATION_FAILED = 30;
    /// Cluster authorization failed.
    CLUSTER_AUTHORIZATION_FAILED = 31;
    /// The broker does not support the requested SASL mechanism.
    UNSUPPORTED_SASL_MECHANISM = 33;
    /// Request is not valid given the current SASL state.
    ILLEGAL_SASL_STATE = 34;
    /// The version of API is not supported.
    UNSUPPORTED_VERSION = 35;
    /// Topic with this name already exists.
    TOPIC_ALREADY_EXISTS = 36;
    /// Number of partitions is below 1.
    INVALID_PARTITIONS = 37;
    /// Replication factor is below 1 or larger than the number of available brokers.
    INVALID_REPLICATION_FACTOR = 38;
    /// Configuration is invalid.
    INVALID_CONFIG = 40;
    /// This most likely occurs because of a request being malformed by the client library or
    /// the message was sent to an incompatible broker.
    INVALID_REQUEST = 42;
    /// SASL Authentication failed.
    SASL_AUTHENTICATION_FAILED = 58;
    /// The requesting client does not support the compression type of given partition.
    UNSUPPORTED_COMPRESSION_TYPE = 76;
}

/// A request header (v1, or v2 with tagged fields for flexible versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    /// The API.
    pub api_key: i16,
    /// Its version.
    pub api_version: i16,
    /// Echoed in the response.
    pub correlation_id: i32,
    /// The client's id (null allowed).
    pub client_id: Option<String>,
}

/// Whether `api_key` at `version` uses flexible encoding (compact types and tagged fields).
/// Within the versions we serve, only ApiVersions v3 does; above them the answer does not
/// matter (the request is refused before its body is read).
pub fn is_flexible(api_key: i16, version: i16) -> bool {
    api_key == api::API_VERSIONS && version >= 3
}

impl RequestHeader {
    /// Reads the header at the front of a request. The client id is a classic nullable
    /// string even in header v2; the tagged fields follow for flexible requests.
    pub fn decode(r: &mut Reader) -> Result<RequestHeader, DecodeError> {
        let api_key = r.i16()?;
        let api_version = r.i16()?;
        let correlation_id = r.i32()?;
        let client_id = r.nullable_string(false)?;
        let h = RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
        };
        if h.is_supported() && is_flexible(api_key, api_version) {
            r.tagged_fields()?;
        }
        Ok(h)
    }

    /// Whether we serve this API at this version.
    pub fn is_supported(&self) -> bool {
        supported(self.api_key).is_some_and(|(min, max)| (min..=max).contains(&self.api_version))
    }

    /// Appends the header to `out` (for clients and tests).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_i16(self.api_key);
        out.put_i16(self.api_version);
        out.put_i32(self.correlation_id);
        crate::wire::put_nullable_string(out, self.client_id.as_deref(), false);
        if is_flexible(self.api_key, self.api_version) {
            put_empty_tags(out);
        }
    }
}
