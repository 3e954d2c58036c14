//! What one open-loop `placeOrder` got back, sorted into the report's
//! buckets. "Busy" answers (code OVERLOADED, HTTP 429 or 503) are the
//! gateway doing its job under load: counted apart, never as failures, and
//! not retried (the open loop's rate is the offered load, not a client's).

use serde_json::Value;

/// The GraphQL error code that says "busy, retry later".
pub(crate) const OVERLOADED: &str = "OVERLOADED";

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Decided and committed: the order exists and its saga runs.
    Accepted { order_id: String },
    /// Durably queued, not decided within the gateway's wait.
    Pending { order_id: String },
    /// Decided and refused, with the command's code.
    Rejected { code: String },
    /// The gateway said it is busy.
    Overloaded,
    /// A GraphQL error with another code.
    Refused { code: String },
    /// No usable answer: transport error, timeout, unexpected status or body.
    Failed { reason: String },
}

/// Sorts an HTTP status and its JSON body (if it had one) into an answer.
pub(crate) fn classify(status: u16, body: Option<&Value>) -> Answer {
    if status == 429 || status == 503 {
        return Answer::Overloaded;
    }
    let Some(body) = body else { return Answer::Failed { reason: format!("http_{status}") } };
    if let Some(error) = body["errors"].as_array().and_then(|errors| errors.first()) {
        let code = error["extensions"]["code"].as_str().unwrap_or("NO_CODE");
        return if code == OVERLOADED { Answer::Overloaded } else { Answer::Refused { code: code.to_string() } };
    }
    if !(200..300).contains(&status) {
        return Answer::Failed { reason: format!("http_{status}") };
    }
    let payload = &body["data"]["placeOrder"];
    let order_id = payload["orderId"].as_str().map(str::to_string);
    match (payload["status"].as_str(), order_id) {
        (Some("ACCEPTED"), Some(order_id)) => Answer::Accepted { order_id },
        (Some("PENDING"), Some(order_id)) => Answer::Pending { order_id },
        (Some("REJECTED"), _) => {
            Answer::Rejected { code: payload["error"]["code"].as_str().unwrap_or("NO_CODE").to_string() }
        }
        _ => Answer::Failed { reason: "unexpected_payload".into() },
    }
}

/// Why a request got no HTTP answer, as a report key.
pub(crate) fn transport_failure(error: &reqwest::Error) -> Answer {
    let reason = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "transport"
    };
    Answer::Failed { reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn placed(status: &str) -> Value {
        json!({ "data": { "placeOrder": { "status": status, "orderId": "o1", "error": null } } })
    }

    #[test]
    fn decided_answers_carry_the_order_or_the_code() {
        assert_eq!(classify(200, Some(&placed("ACCEPTED"))), Answer::Accepted { order_id: "o1".into() });
        assert_eq!(classify(200, Some(&placed("PENDING"))), Answer::Pending { order_id: "o1".into() });
        let rejected = json!({ "data": { "placeOrder": { "status": "REJECTED", "orderId": "o1", "error": { "code": "UNKNOWN_SKU" } } } });
        assert_eq!(classify(200, Some(&rejected)), Answer::Rejected { code: "UNKNOWN_SKU".into() });
    }

    #[test]
    fn busy_is_counted_apart_whichever_way_the_gateway_says_it() {
        assert_eq!(classify(503, None), Answer::Overloaded);
        assert_eq!(classify(429, Some(&json!({ "errors": [{ "message": "slow down" }] }))), Answer::Overloaded);
        let coded = json!({ "data": null, "errors": [{ "message": "busy", "extensions": { "code": "OVERLOADED", "retryAfterSeconds": 1 } }] });
        assert_eq!(classify(200, Some(&coded)), Answer::Overloaded);
    }

    #[test]
    fn other_errors_are_refusals_by_code_and_the_rest_failures() {
        let coded = json!({ "errors": [{ "message": "no", "extensions": { "code": "UNAVAILABLE" } }] });
        assert_eq!(classify(200, Some(&coded)), Answer::Refused { code: "UNAVAILABLE".into() });
        assert_eq!(
            classify(400, Some(&json!({ "errors": [{ "message": "?" }] }))),
            Answer::Refused { code: "NO_CODE".into() }
        );
        assert_eq!(classify(408, None), Answer::Failed { reason: "http_408".into() });
        assert_eq!(classify(500, Some(&json!({}))), Answer::Failed { reason: "http_500".into() });
        assert_eq!(
            classify(200, Some(&json!({ "data": null }))),
            Answer::Failed { reason: "unexpected_payload".into() }
        );
    }
}
