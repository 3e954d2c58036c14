//! GraphQL over WebSocket. async-graphql runs the protocol; this module
//! holds the connection to graphql-transport-ws as written:
//!
//! * `4408` when no `connection_init` arrives within the init timeout;
//! * `4400` for a message that is not the protocol's, `4401` for a
//!   `subscribe` before the connection is acknowledged, `4403` when
//!   `connection_init` is refused (a bad token), `4409` for a second
//!   `subscribe` with an id still in use, `4429` for a second `connection_init`;
//! * the server sends `ping` at an interval once acknowledged, so idle
//!   proxies keep the socket; it answers the client's `ping` with `pong`;
//! * on shutdown, `1001` (going away);
//! * when the token given in `connection_init` expires, `4403`: a
//!   connection outlives no token (the client may reconnect with a new one).
//!
//! The legacy subprotocol (`graphql-ws`) is served as async-graphql does.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use async_graphql::http::{WebSocket as GraphQLStream, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::graphql::ConveyorSchema;

/// The protocol's timing.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// How long a client may take to send `connection_init`.
    pub init_timeout: Duration,
    /// How often the server pings an acknowledged connection.
    pub ping_interval: Duration,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self { init_timeout: Duration::from_secs(10), ping_interval: Duration::from_secs(15) }
    }
}

/// What the connection has seen, to name its close codes.
#[derive(Default)]
struct State {
    init_seen: bool,
    acknowledged: bool,
    active: HashSet<String>,
}

pub async fn serve(
    socket: WebSocket,
    schema: ConveyorSchema,
    auth: Authenticator,
    settings: WsSettings,
    shutdown: CancellationToken,
) {
    let transport_ws = socket.protocol().and_then(|value| value.to_str().ok()) == Some("graphql-transport-ws");
    let protocol =
        if transport_ws { WebSocketProtocols::GraphQLWS } else { WebSocketProtocols::SubscriptionsTransportWS };
    let (mut sink, mut incoming) = socket.split();
    let (input, input_stream) = mpsc::channel::<Vec<u8>>(64);
    // Until when the connection's token is good, once connection_init told.
    let (expiry_sender, mut expiry) = tokio::sync::watch::channel(None::<SystemTime>);
    let mut graphql = GraphQLStream::new(schema, ReceiverStream::new(input_stream), protocol)
        // The token travels in connection_init: {"authorization": "Bearer …"}.
        .on_connection_init(move |payload| async move {
            let (caller, until) = auth.caller_until(payload.get("authorization").and_then(Value::as_str))?;
            let _ = expiry_sender.send(until);
            let mut data = async_graphql::Data::default();
            data.insert(caller);
            Ok(data)
        });
    let mut state = State::default();
    let init_deadline = tokio::time::sleep(settings.init_timeout);
    tokio::pin!(init_deadline);
    let mut ping = tokio::time::interval(settings.ping_interval);
    ping.reset();
    let token_expiry = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(token_expiry);
    // Waiting to hear the expiry (the init callback runs once, then drops its sender).
    let mut awaiting_expiry = true;
    let mut expires = false;

    let close = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some((1001, "server shutting down".to_string())),
            _ = &mut init_deadline, if transport_ws && !state.init_seen => {
                break Some((4408, "Connection initialisation timeout".to_string()));
            }
            told = expiry.changed(), if awaiting_expiry => {
                awaiting_expiry = false;
                if let (Ok(()), Some(until)) = (told, *expiry.borrow_and_update()) {
                    let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                    token_expiry.as_mut().reset(tokio::time::Instant::now() + left);
                    expires = true;
                }
            }
            _ = &mut token_expiry, if expires => break Some((4403, "Forbidden: the token expired".to_string())),
            _ = ping.tick(), if transport_ws && state.acknowledged => {
                if sink.send(Message::text(json!({ "type": "ping" }).to_string())).await.is_err() {
                    break None;
                }
            }
            message = incoming.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                };
                if transport_ws && let Some(code) = admit(&mut state, &text) {
                    break Some(code);
                }
                if input.send(text.into_bytes()).await.is_err() {
                    break None;
                }
            }
            outgoing = graphql.next() => match outgoing {
                Some(WsMessage::Text(text)) => {
                    if transport_ws {
                        observe(&mut state, &text);
                    }
                    if sink.send(Message::text(text)).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    break Some(if transport_ws { name_close(&state, code, reason) } else { (code, reason) });
                }
                None => break None,
            },
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
}

/// Checks a client message against the protocol before async-graphql sees
/// it; returns the close it calls for.
fn admit(state: &mut State, text: &str) -> Option<(u16, String)> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Some((4400, "Invalid message received".into()));
    };
    match message["type"].as_str() {
        Some("connection_init") => {
            if state.init_seen {
                return Some((4429, "Too many initialisation requests".into()));
            }
            state.init_seen = true;
        }
        Some("subscribe") => {
            if !state.acknowledged {
                return Some((4401, "Unauthorized".into()));
            }
            let Some(id) = message["id"].as_str() else {
                return Some((4400, "Invalid message received".into()));
            };
            if !state.active.insert(id.to_string()) {
                return Some((4409, format!("Subscriber for {id} already exists")));
            }
        }
        Some("complete") => {
            if let Some(id) = message["id"].as_str() {
                state.active.remove(id);
            }
        }
        Some("ping" | "pong") => {}
        _ => return Some((4400, "Invalid message received".into())),
    }
    None
}

/// Follows what the server says: the acknowledgement, and ids that end.
fn observe(state: &mut State, text: &str) {
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
fn name_close(state: &State, code: u16, reason: String) -> (u16, String) {
    match code {
        1002 if state.init_seen && !state.acknowledged => (4403, "Forbidden".into()),
        1002 => (4400, reason),
        1011 => (4401, "Unauthorized".into()),
        _ => (code, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_is_checked_message_by_message() {
        let mut state = State::default();
        assert_eq!(admit(&mut state, "nonsense").map(|(code, _)| code), Some(4400));
        assert_eq!(admit(&mut state, r#"{"type":"subscribe","id":"1"}"#).map(|(code, _)| code), Some(4401));
        assert_eq!(admit(&mut state, r#"{"type":"connection_init"}"#), None);
        assert_eq!(admit(&mut state, r#"{"type":"connection_init"}"#).map(|(code, _)| code), Some(4429));
        observe(&mut state, r#"{"type":"connection_ack"}"#);
        assert_eq!(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#), None);
        assert_eq!(
            admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#).map(|(code, _)| code),
            Some(4409)
        );
        observe(&mut state, r#"{"type":"complete","id":"1"}"#);
        assert_eq!(admit(&mut state, r#"{"type":"subscribe","id":"1","payload":{}}"#), None);
        assert_eq!(admit(&mut state, r#"{"type":"unknown"}"#).map(|(code, _)| code), Some(4400));
    }

    #[test]
    fn async_graphqls_closes_get_the_protocols_codes() {
        let refused = State { init_seen: true, ..State::default() };
        assert_eq!(name_close(&refused, 1002, "x".into()).0, 4403);
        assert_eq!(name_close(&State::default(), 1002, "x".into()).0, 4400);
        assert_eq!(name_close(&State::default(), 1011, "x".into()).0, 4401);
    }
}
