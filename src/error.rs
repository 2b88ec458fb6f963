//! Domain errors. The API layer (`api::status`) is the one place they
//! become gRPC statuses.

use crate::domain::validate::FieldViolation;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or event is malformed; every offending field is listed.
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// A configured limit would be exceeded (e.g. distinct attribute values).
    #[error("{field}: {reason}")]
    ResourceExhausted { field: String, reason: String },
    /// The named entity does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A position outside what is kept (e.g. an alert sequence older than
    /// retention); the message states the valid range.
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
    /// The request is valid but the entity is not in a state that allows
    /// it (e.g. acknowledging a resolved alert).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The service cannot take the request now (shutting down, storage
    /// failed, queue full); retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            reason: reason.into(),
        }])
    }

    /// The field a client should look at, when there is one.
    pub fn field(&self) -> &str {
        match self {
            Self::InvalidArgument(v) => v.first().map_or("", |v| v.field.as_str()),
            Self::ResourceExhausted { field, .. } | Self::OutOfRange { field, .. } => field,
            _ => "",
        }
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
