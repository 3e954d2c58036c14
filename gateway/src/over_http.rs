//! GraphQL over HTTP, as its specification says: which media type answers
//! (from `Accept`), which status code goes with it, and no mutations over GET.
//!
//! * `application/graphql-response+json` (when the client accepts it): a
//!   request that fails before execution (parse or validation error, so no
//!   `data`) is `400`; anything executed is `200`.
//! * `application/json` (when accepted, or with no `Accept` at all, as legacy
//!   clients send): always `200`, errors in the body.
//! * An `Accept` that allows neither: `406`.
//! * Either way, a request refused by admission and nothing else (no `data`,
//!   every error `OVERLOADED`) is `503` with `Retry-After`, so proxies, load
//!   balancers and plain HTTP clients back off as well; the specification
//!   leaves such non-GraphQL statuses (rate limits, overload) to the server.

use async_graphql::parser::types::{DocumentOperations, OperationDefinition, OperationType, Selection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schema::codes;

use crate::graphql::errors::RETRY_AFTER_SECONDS;

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
pub const JSON: &str = "application/json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    GraphQLResponseJson,
    Json,
}

/// The media type to answer in, or `None` when `Accept` allows neither.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()) else {
        return Some(MediaType::Json);
    };
    let mut best: Option<(f32, MediaType)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|parameter| parameter.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let candidate = match media.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphQLResponseJson,
            // A client that takes anything gets what every client reads.
            JSON | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if quality > 0.0 && best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, candidate));
        }
    }
    best.map(|(_, media)| media)
}

/// Whether the operation a request would run is a mutation (for GET, which
/// may only query). A document that does not parse is not one: the parse
/// error is reported as usual.
pub fn is_mutation(request: &async_graphql::Request) -> bool {
    with_operation(request, |operation| operation.ty == OperationType::Mutation)
}

/// Whether the operation only asks for the schema (`__schema`, `__type`,
/// `__typename` at the top): such queries are exempt from the depth and
/// complexity limits, so GraphiQL and code generators can load the schema.
pub fn is_introspection(request: &async_graphql::Request) -> bool {
    with_operation(request, |operation| {
        operation.ty == OperationType::Query
            && !operation.selection_set.node.items.is_empty()
            && operation.selection_set.node.items.iter().all(|item| match &item.node {
                Selection::Field(field) => field.node.name.node.starts_with("__"),
                Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
            })
    })
}

fn with_operation(request: &async_graphql::Request, test: impl Fn(&OperationDefinition) -> bool) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.is_some_and(test)
}

/// The HTTP response for an executed (or refused) GraphQL request.
pub fn respond(media: MediaType, response: &async_graphql::Response) -> Response {
    // Errors with nothing executed have no `data`: a request error.
    let request_error = !response.errors.is_empty() && response.data == async_graphql::Value::Null;
    let mut json = match serde_json::to_value(response) {
        Ok(json) => json,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if request_error && let Some(body) = json.as_object_mut() {
        // Nothing was executed, so there is no `data` entry at all.
        body.remove("data");
    }
    let body = json.to_string();
    let (status, content_type) = match media {
        MediaType::GraphQLResponseJson if request_error => (StatusCode::BAD_REQUEST, GRAPHQL_RESPONSE_JSON),
        MediaType::GraphQLResponseJson => (StatusCode::OK, GRAPHQL_RESPONSE_JSON),
        MediaType::Json => (StatusCode::OK, JSON),
    };
    let retry_after = overloaded_only(response);
    let status = if retry_after.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { status };
    let mut http = (status, body).into_response();
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(seconds) = retry_after {
        http.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    http
}

/// The retry hint in seconds (the largest one) when the response has no
/// data and only `OVERLOADED` errors; `None` otherwise.
fn overloaded_only(response: &async_graphql::Response) -> Option<u64> {
    if response.errors.is_empty() || response.data != async_graphql::Value::Null {
        return None;
    }
    let mut longest = 0;
    for error in &response.errors {
        let extensions = error.extensions.as_ref()?;
        if extensions.get("code") != Some(&async_graphql::Value::from(codes::OVERLOADED)) {
            return None;
        }
        let seconds = match extensions.get(RETRY_AFTER_SECONDS) {
            Some(async_graphql::Value::Number(seconds)) => seconds.as_u64(),
            _ => None,
        };
        longest = longest.max(seconds.unwrap_or(1));
    }
    Some(longest.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn accept_chooses_the_media_type() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("application/json")), Some(MediaType::Json));
        assert_eq!(negotiate(&accept(GRAPHQL_RESPONSE_JSON)), Some(MediaType::GraphQLResponseJson));
        assert_eq!(
            negotiate(&accept("application/json;q=0.9, application/graphql-response+json")),
            Some(MediaType::GraphQLResponseJson)
        );
        assert_eq!(
            negotiate(&accept("application/graphql-response+json;q=0.5, application/json")),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("*/*")), Some(MediaType::Json));
        assert_eq!(negotiate(&accept("text/html")), None);
    }

    fn error(code: &str) -> async_graphql::ServerError {
        let mut error = async_graphql::ServerError::new("refused", None);
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", code);
        if code == codes::OVERLOADED {
            extensions.set(RETRY_AFTER_SECONDS, 3);
        }
        error.extensions = Some(extensions);
        error
    }

    #[test]
    fn an_overload_and_nothing_else_is_503_with_retry_after_in_both_media_types() {
        for media in [MediaType::GraphQLResponseJson, MediaType::Json] {
            let refused = async_graphql::Response::from_errors(vec![error(codes::OVERLOADED)]);
            let http = respond(media, &refused);
            assert_eq!(http.status(), StatusCode::SERVICE_UNAVAILABLE, "{media:?}");
            assert_eq!(http.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("3"));

            let mixed = async_graphql::Response::from_errors(vec![error(codes::OVERLOADED), error(codes::INVALID_ID)]);
            assert_ne!(respond(media, &mixed).status(), StatusCode::SERVICE_UNAVAILABLE, "another error too");
            assert!(respond(media, &mixed).headers().get(header::RETRY_AFTER).is_none());

            let mut partial = async_graphql::Response::new(
                async_graphql::Value::from_json(serde_json::json!({ "a": 1 })).expect("value"),
            );
            partial.errors.push(error(codes::OVERLOADED));
            assert_eq!(respond(media, &partial).status(), StatusCode::OK, "some data was returned");
        }
    }

    #[test]
    fn mutations_are_told_apart_from_queries() {
        let request = |query: &str, name: Option<&str>| {
            let request = async_graphql::Request::new(query);
            match name {
                Some(name) => request.operation_name(name),
                None => request,
            }
        };
        assert!(is_mutation(&request("mutation { a }", None)));
        assert!(!is_mutation(&request("{ a }", None)));
        assert!(is_mutation(&request("query Q { a } mutation M { b }", Some("M"))));
        assert!(!is_mutation(&request("query Q { a } mutation M { b }", Some("Q"))));
        assert!(!is_mutation(&request("{ a", None)));
        assert!(is_introspection(&request("query I { __schema { types { name } } }", None)));
        assert!(is_introspection(&request("{ __type(name: \"Order\") { name } __typename }", None)));
        assert!(!is_introspection(&request("{ __typename orders { edges { cursor } } }", None)));
        assert!(!is_introspection(&request("{ ...F } fragment F on Query { __typename }", None)));
        assert!(!is_introspection(&request("mutation { __typename }", None)));
    }
}
