//! graphql-transport-ws as specified: close codes and pings, on both backends.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, Isolation, TestApp, WAIT};

crate::on_both_backends!(the_transport_closes_with_the_protocols_codes_and_pings);

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

async fn acknowledged(address: SocketAddr) -> Socket {
    let token =
        gateway::auth::issue(SECRET.as_bytes(), gateway::Role::Admin, "ops", Duration::from_secs(600)).expect("signs");
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
    let mut answer = next(&mut twice).await;
    while let Ok(message) = &answer {
        assert_eq!(message["type"], "ping", "only pings before the close: {message}");
        answer = next(&mut twice).await;
    }
    assert_eq!(answer, Err(4429));

    // Pings both ways, and an id used twice while its subscription runs: 4409.
    let mut socket = acknowledged(address).await;
    assert_eq!(next(&mut socket).await.expect("a ping")["type"], "ping", "the server pings");
    send(&mut socket, json!({ "type": "pong" })).await;
    send(&mut socket, json!({ "type": "ping" })).await;
    let mut pong = next(&mut socket).await.expect("a message");
    while pong["type"] == "ping" {
        pong = next(&mut socket).await.expect("a message");
    }
    assert_eq!(pong["type"], "pong");
    let follow =
        json!({ "query": "subscription { orderUpdated(id: \"0193a7d0-0000-7000-8000-000000000001\") { id } }" });
    send(&mut socket, json!({ "id": "same", "type": "subscribe", "payload": follow })).await;
    send(&mut socket, json!({ "id": "same", "type": "subscribe", "payload": follow })).await;
    let mut closed = next(&mut socket).await;
    while closed.is_ok() {
        closed = next(&mut socket).await;
    }
    assert_eq!(closed, Err(4409));
}
