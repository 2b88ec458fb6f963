//! The one place where domain errors become gRPC statuses.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;
use crate::store::StoreError;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let code = code(&error);
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.reason);
                }
                Status::with_error_details(code, message, details)
            }
            Error::ResourceExhausted { field, reason } | Error::OutOfRange { field, reason } => {
                Status::with_error_details(
                    code,
                    message,
                    ErrorDetails::with_bad_request_violation(field, reason),
                )
            }
            Error::Storage(ref e) => {
                tracing::error!(error = %e, "storage error answering a request");
                Status::new(code, message)
            }
            Error::NotFound(_) | Error::Unavailable(_) | Error::FailedPrecondition(_) => {
                Status::new(code, message)
            }
        }
    }
}

/// The gRPC code of an error; also reported per event in batch and stream
/// results.
pub fn code(error: &Error) -> Code {
    match error {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::ResourceExhausted { .. } => Code::ResourceExhausted,
        Error::NotFound(_) => Code::NotFound,
        Error::OutOfRange { .. } => Code::OutOfRange,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Storage(StoreError::Schema { .. }) => Code::FailedPrecondition,
        Error::Storage(_) => Code::Internal,
    }
}
