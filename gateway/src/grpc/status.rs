//! Every gRPC error is a status whose details hold a `google.rpc.ErrorInfo`
//! with `reason` = the Conveyor error code (the one GraphQL puts in
//! `extensions.code`) and `domain` = [`ERROR_DOMAIN`]; the code is also in
//! the `conveyor-error-code` trailer for clients without rich-error support.
//! `OVERLOADED` and `RATE_LIMITED` add a `google.rpc.RetryInfo`.

use std::collections::HashMap;
use std::time::Duration;

use async_graphql::ErrorExtensionValues;
use schema::codes;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::{FORBIDDEN, UNAUTHENTICATED};
use crate::graphql::errors::RETRY_AFTER_SECONDS;

/// `ErrorInfo.domain` of Conveyor's errors.
pub const ERROR_DOMAIN: &str = "conveyor";

/// The trailer that repeats the Conveyor error code.
pub const ERROR_CODE_METADATA: &str = "conveyor-error-code";

/// The gRPC code a Conveyor error code maps to.
fn grpc_code(code: &str) -> Code {
    match code {
        UNAUTHENTICATED => Code::Unauthenticated,
        FORBIDDEN => Code::PermissionDenied,
        codes::RATE_LIMITED | codes::TOO_MANY_SUBSCRIPTIONS | codes::READER_TOO_SLOW => Code::ResourceExhausted,
        codes::OVERLOADED | codes::UNAVAILABLE => Code::Unavailable,
        codes::INTERNAL => Code::Internal,
        codes::IDEMPOTENCY_KEY_REUSED => Code::AlreadyExists,
        codes::QUERY_TOO_LARGE | codes::RESPONSE_TOO_LARGE => Code::OutOfRange,
        code if code.ends_with("_NOT_FOUND") && code != codes::PERSISTED_QUERY_NOT_FOUND => Code::NotFound,
        _ => Code::InvalidArgument,
    }
}

/// A status for a Conveyor error code, its message and an optional retry hint.
pub fn coded(code: &str, message: impl Into<String>, retry_after: Option<Duration>) -> Status {
    with_metadata(code, message, retry_after, HashMap::new())
}

/// As [`coded`], with `ErrorInfo.metadata` (e.g. a stream's `position`).
pub fn with_metadata(
    code: &str,
    message: impl Into<String>,
    retry_after: Option<Duration>,
    metadata: HashMap<String, String>,
) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(code, ERROR_DOMAIN, metadata);
    if retry_after.is_some() {
        details.set_retry_info(retry_after);
    }
    let mut status = Status::with_error_details(grpc_code(code), message, details);
    if let Ok(value) = MetadataValue::try_from(code) {
        status.metadata_mut().insert(ERROR_CODE_METADATA, value);
    }
    status
}

/// The status for an error the GraphQL layer raised (its `extensions.code`;
/// none is `INTERNAL`, though every error carries one by then).
pub fn from_graphql(message: &str, extensions: Option<&ErrorExtensionValues>) -> Status {
    let field = |name: &str| extensions.and_then(|extensions| extensions.get(name));
    let code = match field("code") {
        Some(async_graphql::Value::String(code)) => code.clone(),
        _ => codes::INTERNAL.to_string(),
    };
    let retry_after = match field(RETRY_AFTER_SECONDS) {
        Some(async_graphql::Value::Number(seconds)) => seconds.as_u64().map(Duration::from_secs),
        _ => None,
    };
    coded(&code, message, retry_after)
}

/// For an `async_graphql::Error` the access rules return.
pub fn from_error(error: &async_graphql::Error) -> Status {
    from_graphql(&error.message, error.extensions.as_ref())
}

/// Something failed inside Conveyor: logged, shown as `INTERNAL`.
pub fn internal(error: impl std::fmt::Display) -> Status {
    let correlation_id = uuid::Uuid::now_v7();
    tracing::error!(%correlation_id, %error, "internal error (gRPC)");
    coded(codes::INTERNAL, format!("internal error (correlation id {correlation_id})"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_grpc_codes() {
        assert_eq!(grpc_code(UNAUTHENTICATED), Code::Unauthenticated);
        assert_eq!(grpc_code(FORBIDDEN), Code::PermissionDenied);
        assert_eq!(grpc_code(codes::ORDER_NOT_FOUND), Code::NotFound);
        assert_eq!(grpc_code(codes::INVALID_ID), Code::InvalidArgument);
        assert_eq!(grpc_code(codes::OVERLOADED), Code::Unavailable);
        assert_eq!(grpc_code(codes::RATE_LIMITED), Code::ResourceExhausted);
    }

    #[test]
    fn the_code_travels_in_the_details_and_the_trailer() {
        let status = coded(codes::RATE_LIMITED, "slow down", Some(Duration::from_secs(2)));
        let details = status.get_error_details();
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), (codes::RATE_LIMITED, ERROR_DOMAIN));
        assert_eq!(details.retry_info().and_then(|retry| retry.retry_delay), Some(Duration::from_secs(2)));
        assert_eq!(
            status.metadata().get(ERROR_CODE_METADATA).and_then(|value| value.to_str().ok()),
            Some(codes::RATE_LIMITED)
        );
    }
}
