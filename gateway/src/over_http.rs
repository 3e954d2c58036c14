//! GraphQL over HTTP, as its specification says: which media type answers
//! (from `Accept`), which status code goes with it, and no mutations over GET.
//!
//! * `application/graphql-response+json` (when the client accepts it): a
//!   request that fails before execution (parse or validation error, so no
//!   `data`) is `400`; anything executed is `200`.
//! * `application/json` (when accepted, or with no `Accept` at all, as legacy
//!   clients send): always `200`, errors in the body.
//! * An `Accept` that allows neither: `406`.
//! * Either way, a request refused at the edge and for nothing else (no
//!   `data`, every error the same refusal) gets that refusal's status, so
//!   proxies, load balancers and plain HTTP clients act on it too: admission
//!   (`OVERLOADED`) `503` and the rate limit (`RATE_LIMITED`) `429`, both with
//!   `Retry-After`; a mutation over GET (`MUTATION_NEEDS_POST`) `405` with
//!   `Allow: POST`. The specification leaves such statuses to the server.

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

/// The HTTP response for an executed (or refused) GraphQL request.
pub fn respond(media: MediaType, response: &async_graphql::Response) -> Response {
    // Errors with nothing executed have no `data`: a request error.
    let request_error = !response.errors.is_empty() && response.data == async_graphql::Value::Null;
    let body = if request_error {
        let mut json = match serde_json::to_value(response) {
            Ok(json) => json,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
        if let Some(body) = json.as_object_mut() {
            // Nothing was executed, so there is no `data` entry at all.
            body.remove("data");
        }
        json.to_string()
    } else {
        match serde_json::to_string(response) {
            Ok(body) => body,
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    };
    let (status, content_type) = match media {
        MediaType::GraphQLResponseJson if request_error => (StatusCode::BAD_REQUEST, GRAPHQL_RESPONSE_JSON),
        MediaType::GraphQLResponseJson => (StatusCode::OK, GRAPHQL_RESPONSE_JSON),
        MediaType::Json => (StatusCode::OK, JSON),
    };
    let refusal = refused_only(response);
    let status = refusal.map_or(status, |(status, _)| status);
    let mut http = (status, body).into_response();
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    match refusal {
        Some((StatusCode::METHOD_NOT_ALLOWED, _)) => {
            http.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        Some((_, seconds)) => {
            http.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        None => {}
    }
    http
}

/// The HTTP response for an answer already serialized: one executed without
/// errors (so `200` in either media type), as kept by the answer cache.
pub fn respond_answer(media: MediaType, answer: axum::body::Bytes) -> Response {
    let content_type = match media {
        MediaType::GraphQLResponseJson => GRAPHQL_RESPONSE_JSON,
        MediaType::Json => JSON,
    };
    let mut http = (StatusCode::OK, answer).into_response();
    http.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    http
}

/// The status of an edge refusal and the retry hint in seconds (the largest
/// one), when the response has no data and only errors of that one refusal;
/// `None` otherwise.
fn refused_only(response: &async_graphql::Response) -> Option<(StatusCode, u64)> {
    if response.errors.is_empty() || response.data != async_graphql::Value::Null {
        return None;
    }
    let code_of = |error: &async_graphql::ServerError| match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code.clone()),
        _ => None,
    };
    let code = code_of(&response.errors[0])?;
    let status = match code.as_str() {
        codes::OVERLOADED => StatusCode::SERVICE_UNAVAILABLE,
        codes::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
        codes::MUTATION_NEEDS_POST => StatusCode::METHOD_NOT_ALLOWED,
        _ => return None,
    };
    let mut longest = 0;
    for error in &response.errors {
        if code_of(error).as_deref() != Some(code.as_str()) {
            return None;
        }
        let seconds = match error.extensions.as_ref().and_then(|extensions| extensions.get(RETRY_AFTER_SECONDS)) {
            Some(async_graphql::Value::Number(seconds)) => seconds.as_u64(),
            _ => None,
        };
        longest = longest.max(seconds.unwrap_or(1));
    }
    Some((status, longest.max(1)))
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
    fn a_rate_limit_is_429_and_a_mutation_over_get_405() {
        for media in [MediaType::GraphQLResponseJson, MediaType::Json] {
            let limited = respond(media, &async_graphql::Response::from_errors(vec![error(codes::RATE_LIMITED)]));
            assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS, "{media:?}");
            assert!(limited.headers().get(header::RETRY_AFTER).is_some());
            let get = respond(media, &async_graphql::Response::from_errors(vec![error(codes::MUTATION_NEEDS_POST)]));
            assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED, "{media:?}");
            assert_eq!(get.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()), Some("POST"));
        }
    }
}
