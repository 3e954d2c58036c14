//! GraphQL over WebSocket. async-graphql runs the protocol; this module
//! holds the connection to graphql-transport-ws as written, and to the
//! edge's limits:
//!
//! * only `graphql-transport-ws` is spoken: an upgrade that does not offer
//!   it is refused (HTTP 400) before any socket exists;
//! * `4408` when no `connection_init` arrives within the init timeout;
//! * `4400` for a message that is not the protocol's, `4401` for a
//!   `subscribe` before the connection is acknowledged, `4403` when
//!   `connection_init` is refused (a bad token), `4409` for a second
//!   `subscribe` with an id still in use, `4429` for a second `connection_init`;
//! * the server sends `ping` at an interval once acknowledged, so idle
//!   proxies keep the socket; it answers the client's `ping` with `pong`;
//! * on shutdown, `1001` (going away);
//! * when the token given in `connection_init` expires, `4403`: a
//!   connection outlives no token (the client may reconnect with a new one);
//! * a message larger than the maximum: `1009`;
//! * more connections than allowed for the token's subject: `1013` at
//!   `connection_init` (per IP address they are refused at the upgrade, 429);
//! * a client that does not read what it is sent within the send timeout
//!   (a message untaken that long, or no room in its bounded queue for that
//!   long): `1013` when it can still be told, else the TCP connection is
//!   dropped. The loop never waits on the client, so shutdown and token
//!   expiry close a stuck connection at once;
//! * a `subscribe` past the connection's subscription cap, or past the
//!   caller's rate limit, is answered with an `error` message for its id
//!   (`TOO_MANY_SUBSCRIPTIONS`, `RATE_LIMITED` with `retryAfterSeconds`);
//!   the connection stays open.

pub(crate) mod connections;
mod outgoing;
mod protocol;
mod shared;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use async_graphql::http::{WebSocket as GraphQLStream, WebSocketProtocols, WsMessage};
use axum::extract::ws::{Message, WebSocket};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

pub use connections::{ConnectionCounts, ConnectionSlot};
use outgoing::{Full, Outgoing};
use protocol::{State, Verdict, admit, name_close, observe};
pub use shared::SharedSubscriptions;
use shared::SharingExecutor;

use crate::auth::{Authenticator, Caller};
use crate::graphql::ConveyorSchema;
use crate::rate_limit::{RateLimiter, caller_key};

/// The one subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Each connection's read buffer. tungstenite's default, 128 KiB, is
/// zero-filled up to its capacity on every read (a 128 KiB memset per
/// read, and every page of it resident): 2 500 idle sockets held 320 MiB
/// that way. Clients send small messages (`subscribe`, `pong`); a larger
/// one (up to the maximum message size) grows the buffer as it needs.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The protocol's timing and the connection's limits.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// How long a client may take to send `connection_init`.
    pub init_timeout: Duration,
    /// How often the server pings an acknowledged connection.
    pub ping_interval: Duration,
    /// Subscriptions one connection may run at once.
    pub max_subscriptions: usize,
    /// Largest message (and frame) a client may send.
    pub max_message_bytes: usize,
    /// Messages queued for a client before sending waits.
    pub send_queue: usize,
    /// How long one message may wait to be taken by the client (and for
    /// room in a full queue) before the client is disconnected as too slow.
    pub send_timeout: Duration,
    /// Open connections per client IP address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Open connections per token subject (0: no limit).
    pub max_connections_per_subject: usize,
}

impl Default for WsSettings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl WsSettings {
    pub const DEFAULT: Self = Self {
        init_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(15),
        max_subscriptions: 100,
        max_message_bytes: 64 * 1024,
        send_queue: 256,
        send_timeout: Duration::from_secs(10),
        max_connections_per_ip: 256,
        max_connections_per_subject: 32,
    };
}

/// What one connection is served with.
pub struct Connection {
    pub schema: ConveyorSchema,
    pub auth: Authenticator,
    pub settings: WsSettings,
    pub shutdown: CancellationToken,
    pub limiter: RateLimiter,
    pub counts: ConnectionCounts,
    pub ip: IpAddr,
    /// The client IP's slot, held while the connection lives.
    pub ip_slot: ConnectionSlot,
    /// Identical state subscriptions, run once for every connection.
    pub shared: SharedSubscriptions,
}

/// What `connection_init` decided, told by async-graphql's callback.
enum Init {
    Accepted {
        until: Option<SystemTime>,
        key: String,
        slot: Option<ConnectionSlot>,
    },
    /// The token's subject has every connection it may have.
    Busy,
}

pub async fn serve(socket: WebSocket, connection: Connection) {
    let Connection { schema, auth, settings, shutdown, limiter, counts, ip, ip_slot, shared } = connection;
    let _open = ::schema::metrics::GaugeGuard::new(&::schema::metrics::metrics().websocket_connections);
    let (sink, mut incoming) = socket.split();
    let outgoing = Outgoing::start(sink, settings.send_queue, settings.send_timeout);
    let (input, input_stream) = mpsc::channel::<Vec<u8>>(64);
    let (tell, mut told) = oneshot::channel::<Init>();
    let max_per_subject = settings.max_connections_per_subject;
    let executor = SharingExecutor { schema, shared };
    let mut graphql = GraphQLStream::new(executor, ReceiverStream::new(input_stream), WebSocketProtocols::GraphQLWS)
        // The token travels in connection_init: {"authorization": "Bearer …"}.
        .on_connection_init(move |payload| async move {
            let (caller, until) = auth.caller_until(payload.get("authorization").and_then(Value::as_str))?;
            let slot = match &caller {
                Caller::Authenticated { subject, .. } => {
                    match counts.try_acquire(format!("sub:{subject}"), max_per_subject) {
                        Some(slot) => Some(slot),
                        None => {
                            let _ = tell.send(Init::Busy);
                            return Err(async_graphql::Error::new("too many connections for this caller"));
                        }
                    }
                }
                Caller::Open | Caller::Anonymous => None,
            };
            let _ = tell.send(Init::Accepted { until, key: caller_key(&caller, ip), slot });
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
    // Waiting to hear from connection_init (its callback runs once).
    let mut awaiting_init = true;
    let mut expires = false;
    // Whose rate budget subscribe messages take: the IP's until the token says otherwise.
    let mut rate_key = format!("ip:{ip}");
    // Held while the connection lives.
    let mut _slots = (ip_slot, None::<ConnectionSlot>);
    // A message the full queue had no room for: nothing else is read or
    // answered until it is queued, and the client has the send timeout to
    // make room.
    let mut held: Option<Message> = None;
    let room_deadline = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(room_deadline);

    let close = loop {
        // What an arm wants sent; queued (or held) after the select.
        let send = tokio::select! {
            _ = shutdown.cancelled() => break Some((1001, "server shutting down".to_string())),
            _ = outgoing.stalled() => break Some((1013, "client too slow".to_string())),
            _ = &mut init_deadline, if !state.init_seen => {
                break Some((4408, "Connection initialisation timeout".to_string()));
            }
            init = &mut told, if awaiting_init => {
                awaiting_init = false;
                match init {
                    Ok(Init::Accepted { until, key, slot }) => {
                        rate_key = key;
                        _slots.1 = slot;
                        if let Some(until) = until {
                            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                            token_expiry.as_mut().reset(tokio::time::Instant::now() + left);
                            expires = true;
                        }
                    }
                    Ok(Init::Busy) => state.busy = true,
                    Err(_) => {}
                }
                None
            }
            _ = &mut token_expiry, if expires => break Some((4403, "Forbidden: the token expired".to_string())),
            room = outgoing.room(), if held.is_some() => {
                match (room, held.take()) {
                    (Some(permit), Some(message)) => permit.send(message),
                    _ => break Some((1013, "client too slow".to_string())),
                }
                None
            }
            _ = &mut room_deadline, if held.is_some() => break Some((1013, "client too slow".to_string())),
            _ = ping.tick(), if state.acknowledged && held.is_none() => {
                Some(Message::text(json!({ "type": "ping" }).to_string()))
            }
            // Once acknowledged, what connection_init decided (already told)
            // is heard before the next message: its subscribes take the
            // subject's budget, not the address's.
            message = incoming.next(), if held.is_none() && (!awaiting_init || !state.acknowledged) => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Binary(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(error)) => break read_failure(&error),
                };
                match admit(&mut state, &text, settings.max_subscriptions, || limiter.check(&rate_key)) {
                    Verdict::Forward => {
                        if input.send(text.into_bytes()).await.is_err() {
                            break None;
                        }
                        None
                    }
                    Verdict::Close(code, reason) => break Some((code, reason)),
                    Verdict::Refuse { id, error } => {
                        Some(Message::text(json!({ "id": id, "type": "error", "payload": [error] }).to_string()))
                    }
                }
            }
            answer = graphql.next(), if held.is_none() => match answer {
                Some(WsMessage::Text(text)) => {
                    observe(&mut state, &text);
                    Some(Message::text(text))
                }
                Some(WsMessage::Close(code, reason)) => {
                    if awaiting_init && let Ok(Init::Busy) = told.try_recv() {
                        state.busy = true;
                    }
                    break Some(name_close(&state, code, reason));
                }
                None => break None,
            },
        };
        if let Some(message) = send {
            match outgoing.try_send(message) {
                Ok(()) => {}
                Err(Full(Some(message))) => {
                    held = Some(message);
                    room_deadline.as_mut().reset(tokio::time::Instant::now() + outgoing.send_timeout());
                }
                Err(Full(None)) => break Some((1013, "client too slow".to_string())),
            }
        }
    };
    outgoing.close(close).await;
}

/// A message the socket could not read: too large (`1009`), or not WebSocket.
fn read_failure(error: &axum::Error) -> Option<(u16, String)> {
    // tungstenite's capacity errors: "Space limit exceeded: Message too long: …".
    let text = error.to_string();
    if text.contains("too long") || text.contains("Space limit") {
        Some((1009, "Message too big".into()))
    } else {
        Some((1002, "Protocol error".into()))
    }
}
