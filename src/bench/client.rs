//! The bench's GraphQL client: one HTTP connection pool sized to the load
//! (so the bench, not the pool, decides how many requests are in flight),
//! and graphql-transport-ws sockets for subscriptions.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Longest any one HTTP request may take: above the gateway's own request
/// timeout (30 s by default), so a stuck gateway shows as its own answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);

/// A running gateway, as the bench reaches it.
#[derive(Clone)]
pub(crate) struct Gateway {
    pub http: reqwest::Client,
    /// `<base>/graphql`.
    pub endpoint: String,
    token: Option<String>,
}

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Gateway {
    /// A client whose pool keeps `connections` idle connections to the
    /// gateway, so a load of that many never opens and closes sockets.
    pub fn new(url: &str, token: Option<String>, connections: usize) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &token {
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(connections.max(1))
            .tcp_nodelay(true)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { http, endpoint: format!("{}/graphql", url.trim_end_matches('/')), token })
    }

    /// Posts a query and returns the JSON body, whatever the HTTP status.
    pub async fn post(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.endpoint))?;
        let status = response.status();
        response.json().await.with_context(|| format!("{} answered {status} without a JSON body", self.endpoint))
    }

    /// Opens a graphql-transport-ws connection and waits for its ack.
    pub async fn subscribe_socket(&self) -> anyhow::Result<Socket> {
        let ws_url = self.endpoint.replacen("http", "ws", 1);
        let mut request = ws_url.as_str().into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut socket, _) =
            tokio_tungstenite::connect_async(request).await.with_context(|| format!("cannot open {ws_url}"))?;
        let payload =
            self.token.as_ref().map_or(json!({}), |token| json!({ "authorization": format!("Bearer {token}") }));
        socket.send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())).await?;
        let ack = next_json(&mut socket, Duration::from_secs(30)).await?;
        if ack["type"] != "connection_ack" {
            bail!("expected connection_ack, got {ack}");
        }
        Ok(socket)
    }
}

/// The payload of a mutation that must have been ACCEPTED (seeding).
pub(crate) fn expect_accepted(answer: Value, field: &str) -> anyhow::Result<Value> {
    let payload = answer["data"][field].clone();
    if payload["status"] != "ACCEPTED" {
        bail!("{field} was not accepted: {answer}");
    }
    Ok(payload)
}

/// The next protocol message (answering pings on the way), or an error if
/// none comes within `wait` or the socket closes.
pub(crate) async fn next_json(socket: &mut Socket, wait: Duration) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(wait, socket.next())
            .await
            .with_context(|| format!("no WebSocket message for {} s", wait.as_secs()))?
            .context("WebSocket closed")??;
        if let Some(message) = protocol_message(socket, frame).await? {
            return Ok(message);
        }
    }
}

/// A frame as a protocol message; pings are answered here and give `None`,
/// as do frames that are not text.
pub(crate) async fn protocol_message(socket: &mut Socket, frame: Message) -> anyhow::Result<Option<Value>> {
    let Message::Text(text) = frame else { return Ok(None) };
    let message: Value = serde_json::from_str(&text).context("a WebSocket message that is not JSON")?;
    if message["type"] == "ping" {
        socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?;
        return Ok(None);
    }
    Ok(Some(message))
}
