//! Every GraphQL error carries `extensions.code`; this is the one place that
//! decides which. Internal failures are logged with their cause and a
//! correlation id; the client sees only the code and that id.

use std::fmt::Display;

use async_graphql::{Error, ErrorExtensions, Response};
use schema::codes;
use schema::ports::PortError;
use uuid::Uuid;

use crate::admission::Refusal;

/// The extension that carries an `OVERLOADED` error's retry hint, in whole
/// seconds (HTTP's `Retry-After` takes the same number).
pub const RETRY_AFTER_SECONDS: &str = "retryAfterSeconds";

/// An error the client caused or can act on.
pub fn coded(code: &str, message: impl Into<String>) -> Error {
    let code = code.to_string();
    Error::new(message).extend_with(|_, extensions| extensions.set("code", code))
}

/// Something failed inside Conveyor: logged in full, shown as `INTERNAL`.
pub fn internal(error: impl Display) -> Error {
    let correlation_id = Uuid::now_v7();
    tracing::error!(%correlation_id, error = %error, "internal error");
    Error::new(format!("internal error (correlation id {correlation_id})")).extend_with(|_, extensions| {
        extensions.set("code", codes::INTERNAL);
        extensions.set("correlationId", correlation_id.to_string());
    })
}

/// A dependency is down: the client may retry.
pub fn unavailable(error: PortError) -> Error {
    let correlation_id = Uuid::now_v7();
    tracing::warn!(%correlation_id, error = %error, "dependency unavailable");
    Error::new(format!("service temporarily unavailable (correlation id {correlation_id})")).extend_with(
        |_, extensions| {
            extensions.set("code", codes::UNAVAILABLE);
            extensions.set("correlationId", correlation_id.to_string());
        },
    )
}

/// Admission refused the request before anything was dispatched: the client
/// may retry after the hint (at least a second, as `Retry-After` counts).
pub fn overloaded(refusal: Refusal) -> Error {
    let seconds = refusal.retry_after().as_secs().max(1);
    Error::new(refusal.message()).extend_with(|_, extensions| {
        extensions.set("code", codes::OVERLOADED);
        extensions.set(RETRY_AFTER_SECONDS, seconds);
    })
}

/// Parses a UUID argument, or fails with `INVALID_ID`.
pub fn parse_id(field: &str, id: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(id).map_err(|_| coded(codes::INVALID_ID, format!("{field} `{id}` is not a valid id")))
}

/// The caller passed its rate: nothing was done; retry after the hint.
pub fn rate_limited(retry_after: std::time::Duration) -> async_graphql::ServerError {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut error =
        async_graphql::ServerError::new(format!("too many requests from this caller; retry in {seconds} s"), None);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", codes::RATE_LIMITED);
    extensions.set(RETRY_AFTER_SECONDS, seconds);
    error
}

/// Gives errors raised by async-graphql itself (parse and validation, which
/// carry no path) a code. Anything else without one is a bug: `INTERNAL`,
/// logged with its message under a correlation id that replaces it, so no
/// internal text (a driver's, a loader's) reaches the client.
pub fn add_missing_codes(response: &mut Response) {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|extensions| extensions.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if !error.path.is_empty() {
            let correlation_id = Uuid::now_v7();
            tracing::error!(%correlation_id, error = %error.message, path = ?error.path, "internal error");
            error.message = format!("internal error (correlation id {correlation_id})");
            error.extensions.get_or_insert_with(Default::default).set("correlationId", correlation_id.to_string());
            codes::INTERNAL
        } else if error.message == "PersistedQueryNotFound" {
            // Apollo clients look for this code to resend the full query.
            codes::PERSISTED_QUERY_NOT_FOUND
        } else if error.message.trim_start().starts_with("-->") {
            // async-graphql's parser errors are pest reports: " --> line:col ...".
            codes::GRAPHQL_PARSE_FAILED
        } else {
            codes::GRAPHQL_VALIDATION_FAILED
        };
        error.extensions.get_or_insert_with(Default::default).set("code", code);
    }
}
