//! graphql-transport-ws as specified: close codes and pings, on both backends.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, Isolation, TestApp, WAIT};

crate::on_both_backends!(
    the_transport_closes_with_the_protocols_codes_and_pings,
    a_connection_ends_when_its_token_expires
);

const SECRET: &str = "a-test-secret-of-32-bytes-length";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(address: SocketAddr) -> Socket {
    let mut request = format!("ws://{address}/graphql").into_client_request().expect("valid URL");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket connects");
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("send");
}

/// The next text message, or the close code.
async fn next(socket: &mut Socket) -> Result<Value, u16> {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next()).await.expect("a frame in time");
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).expect("json")),
            Some(Ok(Message::Close(Some(frame)))) => return Err(frame.code.into()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Err(1005),
            Some(Ok(_)) => continue,
        }
    }
}

/// The close code, skipping the server's pings; fails if none comes within [`WAIT`]
/// (pings would otherwise keep a connection that never closes waiting).
async fn closed(socket: &mut Socket) -> u16 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, next(socket)).await.expect("a close within the bound");
        match message {
            Ok(message) => assert_eq!(message["type"], "ping", "only pings before the close: {message}"),
            Err(code) => return code,
        }
    }
}

/// The next message that is not a server ping, within [`WAIT`].
async fn next_not_ping(socket: &mut Socket) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, next(socket)).await.expect("a message within the bound");
        let message = message.unwrap_or_else(|code| panic!("closed with {code}"));
        if message["type"] != "ping" {
            return message;
        }
    }
}

async fn acknowledged(address: SocketAddr) -> Socket {
    let token =
        gateway::auth::issue(SECRET.as_bytes(), gateway::Role::Admin, "ops", Duration::from_secs(600)).expect("signs");
    acknowledged_with(address, &token).await
}

async fn acknowledged_with(address: SocketAddr, token: &str) -> Socket {
    let mut socket = open(address).await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
        .await;
    assert_eq!(next(&mut socket).await.expect("ack")["type"], "connection_ack");
    socket
}

async fn the_transport_closes_with_the_protocols_codes_and_pings(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.ws_init_timeout = Duration::from_millis(300);
        common.ws_ping_interval = Duration::from_millis(200);
    })
    .await;
    let address = app.address;

    // No connection_init in time: 4408.
    let mut silent = open(address).await;
    assert_eq!(next(&mut silent).await, Err(4408));

    // Subscribe before the acknowledgement: 4401.
    let mut eager = open(address).await;
    send(&mut eager, json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ __typename }" } })).await;
    assert_eq!(next(&mut eager).await, Err(4401));

    // Not a protocol message: 4400.
    let mut confused = open(address).await;
    send(&mut confused, json!({ "type": "hello" })).await;
    assert_eq!(next(&mut confused).await, Err(4400));

    // A refused connection_init (bad token): 4403.
    let mut forged = open(address).await;
    send(&mut forged, json!({ "type": "connection_init", "payload": { "authorization": "Bearer nope" } })).await;
    assert_eq!(next(&mut forged).await, Err(4403));

    // A second connection_init: 4429.
    let mut twice = acknowledged(address).await;
    send(&mut twice, json!({ "type": "connection_init" })).await;
    assert_eq!(closed(&mut twice).await, 4429);

    // Pings both ways, and an id used twice while its subscription runs: 4409.
    let mut socket = acknowledged(address).await;
    assert_eq!(next(&mut socket).await.expect("a ping")["type"], "ping", "the server pings");
    send(&mut socket, json!({ "type": "pong" })).await;
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(next_not_ping(&mut socket).await["type"], "pong");
    let follow =
        json!({ "query": "subscription { orderUpdated(id: \"0193a7d0-0000-7000-8000-000000000001\") { id } }" });
    send(&mut socket, json!({ "id": "same", "type": "subscribe", "payload": follow })).await;
    send(&mut socket, json!({ "id": "same", "type": "subscribe", "payload": follow })).await;
    assert_eq!(closed(&mut socket).await, 4409);
}

async fn a_connection_ends_when_its_token_expires(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
    })
    .await;
    // Accepted for one to two seconds more: its exp is nearly a leeway ago.
    let exp = SystemTime::now() + Duration::from_secs(2) - gateway::auth::LEEWAY;
    let expiring = gateway::auth::issue_expiring(SECRET.as_bytes(), gateway::Role::Admin, "ops", exp).expect("signs");
    let mut expires = acknowledged_with(app.address, &expiring).await;
    let mut lasts = acknowledged(app.address).await;
    let follow =
        json!({ "query": "subscription { orderUpdated(id: \"0193a7d0-0000-7000-8000-000000000001\") { id } }" });
    send(&mut expires, json!({ "id": "1", "type": "subscribe", "payload": follow })).await;

    assert_eq!(closed(&mut expires).await, 4403, "the expired token's connection is closed as forbidden");

    // A connection with a token still good is untouched.
    send(&mut lasts, json!({ "type": "ping" })).await;
    assert_eq!(next_not_ping(&mut lasts).await["type"], "pong", "the other connection is open");
}
