//! The edge's WebSocket limits (issue 11, point 3): one subprotocol,
//! subscriptions per connection, connections per IP address and per token
//! subject, the message size, and a client that stops reading.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, Isolation, TestApp, WAIT};

crate::on_both_backends!(
    only_graphql_transport_ws_is_spoken_and_each_connection_is_held_to_its_caps,
    a_client_that_stops_reading_is_disconnected,
    token_expiry_closes_a_connection_whose_client_stopped_reading,
);

pub const SECRET: &str = "a-test-secret-of-32-bytes-length";

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn token(subject: &str) -> String {
    gateway::auth::issue(SECRET.as_bytes(), gateway::Role::Admin, subject, Duration::from_secs(600)).expect("signs")
}

/// Opens a socket offering `protocol`; `Err` with the HTTP status when the upgrade is refused.
pub async fn open_with(address: SocketAddr, protocol: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://{address}/graphql").into_client_request().expect("valid URL");
    if let Some(protocol) = protocol {
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("the upgrade neither succeeded nor was refused over HTTP: {error}"),
    }
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("send");
}

/// The next message that is not a ping (answered), or the close code (1006: closed without one).
pub async fn next(socket: &mut Socket) -> Result<Value, u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next()).await.expect("a frame within the bound");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).expect("json");
                if message["type"] == "ping" {
                    let _ = socket.send(Message::text(json!({ "type": "pong" }).to_string())).await;
                    continue;
                }
                return Ok(message);
            }
            Some(Ok(Message::Close(Some(frame)))) => return Err(frame.code.into()),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return Err(1006),
            Some(Ok(_)) => continue,
        }
    }
}

/// Opens and initializes a connection; `Err` with the close code when refused.
pub async fn init(address: SocketAddr, token: Option<&str>) -> Result<Socket, u16> {
    let mut socket = open_with(address, Some("graphql-transport-ws")).await.expect("the upgrade is accepted");
    let payload = token.map_or(json!({}), |token| json!({ "authorization": format!("Bearer {token}") }));
    send(&mut socket, json!({ "type": "connection_init", "payload": payload })).await;
    let answer = next(&mut socket).await?;
    assert_eq!(answer["type"], "connection_ack", "{answer}");
    Ok(socket)
}

pub async fn subscribe(socket: &mut Socket, id: &str, query: &str) {
    send(socket, json!({ "id": id, "type": "subscribe", "payload": { "query": query } })).await;
}

const FOLLOW: &str = "subscription { orderUpdated(id: \"0193a7d0-0000-7000-8000-000000000001\") { id } }";

async fn only_graphql_transport_ws_is_spoken_and_each_connection_is_held_to_its_caps(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.edge.ws_max_subscriptions = 3;
        common.edge.ws_max_message_bytes = 4096;
        common.edge.ws_max_connections_per_ip = 8;
        common.edge.ws_max_connections_per_subject = 2;
    })
    .await;
    let address = app.address;

    // No subprotocol, or the legacy one: refused at the handshake.
    assert_eq!(open_with(address, None).await.err(), Some(400), "no subprotocol");
    assert_eq!(open_with(address, Some("graphql-ws")).await.err(), Some(400), "the legacy subprotocol");

    // Three subscriptions run; a fourth is refused with a code, and the connection stays.
    let mut socket = init(address, Some(&token("alice"))).await.expect("acknowledged");
    for id in ["1", "2", "3"] {
        subscribe(&mut socket, id, FOLLOW).await;
    }
    subscribe(&mut socket, "4", FOLLOW).await;
    let refused = next(&mut socket).await.expect("an answer");
    assert_eq!((refused["type"].as_str(), refused["id"].as_str()), (Some("error"), Some("4")), "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS", "{refused}");
    // Completing one makes room again.
    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    subscribe(&mut socket, "5", "{ __typename }").await;
    let answered = loop {
        let message = next(&mut socket).await.expect("an answer");
        if message["id"] == "5" {
            break message;
        }
        assert_eq!((message["type"].as_str(), message["id"].as_str()), (Some("complete"), Some("1")), "{message}");
    };
    assert_eq!((answered["id"].as_str(), &answered["payload"]["data"]), (Some("5"), &json!({ "__typename": "Query" })));
    assert_eq!(next(&mut socket).await.expect("complete"), json!({ "type": "complete", "id": "5" }));

    // Two connections per subject: alice's third is refused with 1013, bob is let in.
    let _second = init(address, Some(&token("alice"))).await.expect("alice's second connection");
    assert_eq!(init(address, Some(&token("alice"))).await.err(), Some(1013), "alice's third");
    let _bob = init(address, Some(&token("bob"))).await.expect("bob's first");

    // Eight per address: three are acknowledged (the refused one may still
    // be on its way out); raw upgrades pass until the address's cap, then 429.
    let mut held = Vec::new();
    let refusal = loop {
        match open_with(address, Some("graphql-transport-ws")).await {
            Ok(socket) => held.push(socket),
            Err(status) => break status,
        }
        assert!(held.len() <= 5, "the address's cap was never reached");
    };
    assert_eq!(refusal, 429, "past the address's cap");
    assert!(held.len() >= 4, "only {} upgrades under the cap", held.len());

    // A message over the size limit closes with 1009.
    let padding = "x".repeat(10_000);
    let query = format!("{{ __typename }} #{padding}");
    send(&mut socket, json!({ "id": "big", "type": "subscribe", "payload": { "query": query } })).await;
    assert_eq!(next(&mut socket).await.err(), Some(1009), "a message over the limit");
}

async fn a_client_that_stops_reading_is_disconnected(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.edge.ws_send_queue = 4;
        common.edge.ws_send_timeout = Duration::from_millis(500);
        common.edge.ws_max_connections_per_subject = 1;
    })
    .await;
    let address = app.address;
    let mut slow = init(address, Some(&token("slow"))).await.expect("acknowledged");
    // Asks for far more than the socket buffers hold and reads none of it:
    // the server gives the connection up, and its subject's one slot comes free.
    flood(&mut slow).await;
    let _next = slot_comes_free(address, "slow", "the client that stopped reading was never disconnected").await;
    // What it finds when it reads again: what was sent, then the end.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, slow.next()).await.expect("the slow connection ends") {
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|frame| u16::from(frame.code));
                assert!(matches!(code, Some(1013) | None), "closed as too slow: {code:?}");
                break;
            }
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => break,
        }
    }
}

/// Floods `socket` with requests whose answers are large (about a
/// megabyte each: the schema forty times), tens of megabytes in all, far
/// more than the socket buffers hold, and reads nothing.
async fn flood(socket: &mut Socket) {
    let wide: String = (0..40)
        .map(|i| {
            format!("s{i}: __schema {{ types {{ name description fields {{ name description type {{ name }} }} }} }} ")
        })
        .collect();
    for id in 0..30 {
        send(
            socket,
            json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": format!("{{ {wide} }}") } }),
        )
        .await;
    }
}

/// Waits until `subject` may open a connection again (its one slot is free).
async fn slot_comes_free(address: SocketAddr, subject: &str, what: &str) -> Socket {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match init(address, Some(&token(subject))).await {
            Ok(socket) => return socket,
            Err(code) => assert_eq!(code, 1013, "refused while the other connection holds the slot"),
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn token_expiry_closes_a_connection_whose_client_stopped_reading(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.edge.ws_send_queue = 4;
        // Far longer than the test waits: only the expiry can close it in time.
        common.edge.ws_send_timeout = Duration::from_secs(120);
        common.edge.ws_max_connections_per_subject = 1;
    })
    .await;
    // Accepted for about ten seconds more (its exp is nearly a leeway ago):
    // time for the handshake and the flood to fill every buffer first, even
    // on a busy machine (four seconds were not always enough for the
    // handshake alone, and an expired token is refused at `connection_init`).
    let exp = std::time::SystemTime::now() + Duration::from_secs(10) - gateway::auth::LEEWAY;
    let expiring = gateway::auth::issue_expiring(SECRET.as_bytes(), gateway::Role::Admin, "stuck", exp).expect("signs");
    let mut stuck = init(app.address, Some(&expiring)).await.expect("acknowledged");
    flood(&mut stuck).await;
    let _next = slot_comes_free(app.address, "stuck", "the expired connection of a stuck client stayed open").await;
}
