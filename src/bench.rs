//! `conveyor bench`: a load generator for a running gateway. Places N orders
//! from C concurrent clients and reports mutations per second, mutation
//! latency, and the time from ACCEPTED to the order being visible in the
//! view, as a subscriber sees it (each client keeps one graphql-transport-ws
//! connection and subscribes to each order it placed).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Orders to place.
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
const WATCH: &str = "subscription($id: ID!) { orderUpdated(id: $id) { version } }";

#[derive(Default)]
struct Samples {
    mutation: Vec<Duration>,
    visible: Vec<Duration>,
    not_accepted: usize,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.orders == 0 {
        bail!("--orders and --concurrency must be at least 1");
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..args.concurrency).map(|_| client(args.url.clone(), args.orders, next.clone()));
    let mut all = Samples::default();
    for result in futures::future::join_all(clients).await {
        let samples = result?;
        all.mutation.extend(samples.mutation);
        all.visible.extend(samples.visible);
        all.not_accepted += samples.not_accepted;
    }
    let elapsed = started.elapsed();
    println!(
        "orders {} concurrency {} elapsed {:.2}s -> {:.0} mutations/s ({} not accepted)",
        args.orders,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.orders as f64 / elapsed.as_secs_f64(),
        all.not_accepted
    );
    println!("placeOrder latency     {}", percentiles(&mut all.mutation));
    println!("accepted -> visible    {}", percentiles(&mut all.visible));
    Ok(())
}

fn percentiles(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |p: f64| {
        let index = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1000.0
    };
    format!("p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms", at(0.50), at(0.95), at(0.99))
}

async fn client(url: String, orders: usize, next: Arc<AtomicUsize>) -> anyhow::Result<Samples> {
    let http = reqwest::Client::new();
    let ws_url = format!("{}/graphql", url.replacen("http", "ws", 1));
    let mut request = ws_url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(request).await.with_context(|| format!("cannot open {ws_url}"))?;
    socket.send(Message::text(json!({ "type": "connection_init" }).to_string())).await?;
    expect_type(&mut socket, "connection_ack").await?;

    let mut samples = Samples::default();
    let customer = uuid::Uuid::now_v7().to_string();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= orders {
            return Ok(samples);
        }
        let input = json!({ "customerId": customer, "items": [{ "sku": format!("sku-{}", n % 50), "quantity": 1 + n % 3, "unitPriceCents": 990 }] });
        let sent = Instant::now();
        let answer: Value = http
            .post(format!("{url}/graphql"))
            .json(&json!({ "query": PLACE, "variables": { "input": input } }))
            .send()
            .await
            .context("placeOrder request failed")?
            .json()
            .await?;
        let accepted = Instant::now();
        samples.mutation.push(accepted - sent);
        let payload = &answer["data"]["placeOrder"];
        if payload["status"] != "ACCEPTED" {
            samples.not_accepted += 1;
            continue;
        }
        let id = n.to_string();
        let subscribe = json!({ "id": id, "type": "subscribe", "payload": { "query": WATCH, "variables": { "id": payload["orderId"] } } });
        socket.send(Message::text(subscribe.to_string())).await?;
        loop {
            let message = next_json(&mut socket).await?;
            if message["type"] == "next" && message["id"] == id.as_str() {
                samples.visible.push(accepted.elapsed());
                break;
            }
            if message["type"] == "error" {
                bail!("subscription failed: {message}");
            }
        }
        socket.send(Message::text(json!({ "id": id, "type": "complete" }).to_string())).await?;
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .context("no WebSocket message for 30 s")?
            .context("WebSocket closed")??;
        if let Message::Text(text) = frame {
            let message: Value = serde_json::from_str(&text)?;
            if message["type"] == "ping" {
                socket.send(Message::text(json!({ "type": "pong" }).to_string())).await?;
                continue;
            }
            return Ok(message);
        }
    }
}

async fn expect_type(socket: &mut Socket, kind: &str) -> anyhow::Result<()> {
    let message = next_json(socket).await?;
    if message["type"] != kind {
        bail!("expected {kind}, got {message}");
    }
    Ok(())
}
