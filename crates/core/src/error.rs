//! Errors the core reports; each kind maps to one protocol answer at the edge.

use thiserror::Error;

/// Why a core operation was refused. The text follows RabbitMQ's wording so
/// that client logs read the same.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// The named object does not exist (AMQP 404).
    #[error("NOT_FOUND - {0}")]
    NotFound(String),
    /// The operation is not permitted (AMQP 403).
    #[error("ACCESS_REFUSED - {0}")]
    AccessRefused(String),
    /// The object is owned by another connection (AMQP 405).
    #[error("RESOURCE_LOCKED - {0}")]
    ResourceLocked(String),
    /// A precondition such as equivalent attributes failed (AMQP 406).
    #[error("PRECONDITION_FAILED - {0}")]
    PreconditionFailed(String),
    /// The request is not allowed in this state (AMQP 530).
    #[error("NOT_ALLOWED - {0}")]
    NotAllowed(String),
    /// The request is malformed (AMQP 503).
    #[error("COMMAND_INVALID - {0}")]
    CommandInvalid(String),
    /// A feature the broker does not implement (AMQP 540).
    #[error("NOT_IMPLEMENTED - {0}")]
    NotImplemented(String),
    /// The broker could not do it now, e.g. a clustered node without a quorum for a
    /// definition change (AMQP 541, a connection error).
    #[error("INTERNAL_ERROR - {0}")]
    Internal(String),
}

/// Shorthand for core results.
pub type CoreResult<T> = Result<T, CoreError>;
