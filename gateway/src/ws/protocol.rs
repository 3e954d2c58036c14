//! The protocol's rules, message by message: what a client may send when,
//! what the server's messages change, and which close code names what.

use std::collections::HashSet;
use std::time::Duration;

use schema::codes;
use serde_json::{Value, json};

use crate::graphql::errors::RETRY_AFTER_SECONDS;

/// What the connection has seen, to name its close codes.
#[derive(Default)]
pub(super) struct State {
    pub init_seen: bool,
    pub acknowledged: bool,
    /// The subject already has its connections: the refused init closes 1013.
    pub busy: bool,
    pub active: HashSet<String>,
}

/// What to do with a client message.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Forward,
    Close(u16, String),
    /// Answer the subscription with this error and forget it.
    Refuse {
        id: String,
        error: Value,
    },
}

/// Checks a client message against the protocol and the connection's
/// limits before async-graphql sees it. `rate` takes one operation from the
/// caller's budget (or says how long to wait); only a new subscription does.
pub(super) fn admit(
    state: &mut State,
    text: &str,
    max_subscriptions: usize,
    rate: impl FnOnce() -> Result<(), Duration>,
) -> Verdict {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Verdict::Close(4400, "Invalid message received".into());
    };
    match message["type"].as_str() {
        Some("connection_init") => {
            if state.init_seen {
                return Verdict::Close(4429, "Too many initialisation requests".into());
            }
            state.init_seen = true;
        }
        Some("subscribe") => {
            if !state.acknowledged {
                return Verdict::Close(4401, "Unauthorized".into());
            }
            let Some(id) = message["id"].as_str() else {
                return Verdict::Close(4400, "Invalid message received".into());
            };
            if state.active.contains(id) {
                return Verdict::Close(4409, format!("Subscriber for {id} already exists"));
            }
            if state.active.len() >= max_subscriptions {
                let message = format!("this connection runs {max_subscriptions} subscriptions, as many as it may");
                let error = json!({ "message": message, "extensions": { "code": codes::TOO_MANY_SUBSCRIPTIONS } });
                return Verdict::Refuse { id: id.to_string(), error };
            }
            if let Err(wait) = rate() {
                let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
                let error = json!({
                    "message": format!("too many requests from this caller; retry in {seconds} s"),
                    "extensions": { "code": codes::RATE_LIMITED, RETRY_AFTER_SECONDS: seconds },
                });
                return Verdict::Refuse { id: id.to_string(), error };
            }
            state.active.insert(id.to_string());
        }
        Some("complete") => {
            if let Some(id) = message["id"].as_str() {
                state.active.remove(id);
            }
        }
        Some("ping" | "pong") => {}
        _ => return Verdict::Close(4400, "Invalid message received".into()),
    }
    Verdict::Forward
}

/// Follows what the server says: the acknowledgement, and ids that end.
pub(super) fn observe(state: &mut State, text: &str) {
    // Nearly every message is a subscription's next value (async-graphql
    // writes the tag first): it changes nothing here, and is not parsed.
    if text.starts_with(r#"{"type":"next","#) {
        return;
    }
    let Ok(message) = serde_json::from_str::<Value>(text) else { return };
    match message["type"].as_str() {
        Some("connection_ack") => state.acknowledged = true,
        Some("complete" | "error") => {
            if let Some(id) = message["id"].as_str() {
                state.active.remove(id);
            }
        }
        _ => {}
    }
}

/// async-graphql closes with 1002 for a refused init or a bad message, and
/// 1011 for a subscribe before the handshake; the protocol names them.
pub(super) fn name_close(state: &State, code: u16, reason: String) -> (u16, String) {
    match code {
        1002 if state.busy => (1013, "Try again later: too many connections for this caller".into()),
        1002 if state.init_seen && !state.acknowledged => (4403, "Forbidden".into()),
        1002 => (4400, reason),
        1011 => (4401, "Unauthorized".into()),
        _ => (code, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(verdict: Verdict) -> Option<u16> {
        match verdict {
            Verdict::Close(code, _) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn the_protocol_is_checked_message_by_message() {
        let mut state = State::default();
        let admit = |state: &mut State, text: &str| admit(state, text, 100, || Ok(()));
        assert_eq!(code(admit(&mut state, "nonsense")), Some(4400));
        assert_eq!(code(admit(&mut state, r#"{"type":"subscribe","id":"1"}"#)), Some(4401));
        assert_eq!(admit(&mut state, r#"{"type":"connection_init"}"#), Verdict::Forward);
        assert_eq!(code(admit(&mut state, r#"{"type":"connection_init"}"#)), Some(4429));
        observe(&mut state, r#"{"type":"connection_ack"}"#);
        assert_eq!(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#), Verdict::Forward);
        assert_eq!(code(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#)), Some(4409));
        observe(&mut state, r#"{"type":"next","id":"1","payload":{"data":{}}}"#);
        assert_eq!(
            code(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#)),
            Some(4409),
            "still running"
        );
        observe(&mut state, r#"{"type":"complete","id":"1"}"#);
        assert_eq!(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#), Verdict::Forward);
        assert_eq!(code(admit(&mut state, r#"{"type":"unknown"}"#)), Some(4400));
    }

    #[test]
    fn subscriptions_past_the_cap_or_the_rate_are_refused_by_id() {
        let mut state = State { init_seen: true, acknowledged: true, ..State::default() };
        let subscribe = |id: &str| format!(r#"{{"type":"subscribe","id":"{id}","payload":{{}}}}"#);
        assert_eq!(admit(&mut state, &subscribe("a"), 2, || Ok(())), Verdict::Forward);
        assert_eq!(admit(&mut state, &subscribe("b"), 2, || Ok(())), Verdict::Forward);
        let Verdict::Refuse { id, error } = admit(&mut state, &subscribe("c"), 2, || Ok(())) else {
            panic!("the third is refused")
        };
        assert_eq!((id.as_str(), &error["extensions"]["code"]), ("c", &json!(codes::TOO_MANY_SUBSCRIPTIONS)));
        observe(&mut state, r#"{"type":"complete","id":"a"}"#);
        let Verdict::Refuse { error, .. } = admit(&mut state, &subscribe("d"), 2, || Err(Duration::from_millis(300)))
        else {
            panic!("past the rate")
        };
        assert_eq!(error["extensions"]["code"], codes::RATE_LIMITED);
        assert_eq!(error["extensions"][RETRY_AFTER_SECONDS], 1);
        assert_eq!(admit(&mut state, &subscribe("d"), 2, || Ok(())), Verdict::Forward, "the refused id is free");
    }

    #[test]
    fn async_graphqls_closes_get_the_protocols_codes() {
        let refused = State { init_seen: true, ..State::default() };
        assert_eq!(name_close(&refused, 1002, "x".into()).0, 4403);
        let busy = State { init_seen: true, busy: true, ..State::default() };
        assert_eq!(name_close(&busy, 1002, "x".into()).0, 1013);
        assert_eq!(name_close(&State::default(), 1002, "x".into()).0, 4400);
        assert_eq!(name_close(&State::default(), 1011, "x".into()).0, 4401);
    }
}
