//! `conveyor bench`: a load generator for a running gateway. Seeds its own
//! catalog and customer, places N orders from C concurrent clients, and
//! reports mutations per second, mutation latency, the time from ACCEPTED to
//! the order being visible in the view, and the time from sending
//! `placeOrder` to the order being CONFIRMED by the saga, as a subscriber
//! sees them (each client keeps one graphql-transport-ws connection and
//! subscribes to each order it placed).

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
    /// A token for a gateway that requires one: an admin token, since the
    /// bench adds its own products and customer (`conveyor token --role admin`).
    #[arg(long, env = "CONVEYOR_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
const WATCH: &str = "subscription($id: ID!) { orderUpdated(id: $id) { status rejectionCode } }";
const SKUS: usize = 50;

#[derive(Default)]
struct Samples {
    mutation: Vec<Duration>,
    visible: Vec<Duration>,
    confirmed: Vec<Duration>,
    not_accepted: usize,
    not_confirmed: usize,
    /// When the last order this client placed reached its final status.
    last_final: Option<Instant>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.orders == 0 {
        bail!("--orders and --concurrency must be at least 1");
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    }
    let http = reqwest::Client::builder().default_headers(headers).build()?;
    let seed = Seed::create(&http, &args.url).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients = (0..args.concurrency)
        .map(|_| client(http.clone(), args.url.clone(), args.token.clone(), args.orders, next.clone(), seed.clone()));
    let mut all = Samples::default();
    for result in futures::future::join_all(clients).await {
        let samples = result?;
        all.mutation.extend(samples.mutation);
        all.visible.extend(samples.visible);
        all.confirmed.extend(samples.confirmed);
        all.not_accepted += samples.not_accepted;
        all.not_confirmed += samples.not_confirmed;
        all.last_final = all.last_final.max(samples.last_final);
    }
    let elapsed = started.elapsed();
    let settled = all.last_final.map_or(elapsed, |last| last - started);
    println!(
        "orders {} concurrency {} elapsed {:.2}s -> {:.0} mutations/s, {:.0} confirmed/s ({} not accepted, {} not confirmed)",
        args.orders,
        args.concurrency,
        elapsed.as_secs_f64(),
        args.orders as f64 / elapsed.as_secs_f64(),
        all.confirmed.len() as f64 / settled.as_secs_f64(),
        all.not_accepted,
        all.not_confirmed,
    );
    println!("placeOrder latency     {}", percentiles(&mut all.mutation));
    println!("accepted -> visible    {}", percentiles(&mut all.visible));
    println!("placeOrder -> CONFIRMED {}", percentiles(&mut all.confirmed));
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

/// The catalog and customer this run orders from.
#[derive(Clone)]
struct Seed {
    customer_id: String,
    skus: Vec<String>,
}

impl Seed {
    async fn create(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let run = uuid::Uuid::now_v7().simple().to_string();
        let mut skus = Vec::new();
        for n in 0..SKUS {
            let sku = format!("bench-{}-{n}", &run[20..]);
            let add = "mutation($input: AddProductInput!) { addProduct(input: $input) { status } }";
            let input = json!({ "sku": sku, "name": sku, "priceCents": 990, "initialStock": 1_000_000_000 });
            expect_accepted(post(http, url, add, json!({ "input": input })).await?, "addProduct")?;
            skus.push(sku);
        }
        let register =
            "mutation($input: RegisterCustomerInput!) { registerCustomer(input: $input) { status customerId } }";
        // Emails are unique per customer: a fresh one per run, so bench can run again on the same data.
        let email = format!("bench-{}@example.com", uuid::Uuid::now_v7());
        let input = json!({ "name": "Bench", "email": email, "creditLimitCents": 1_000_000_000 });
        let answer = post(http, url, register, json!({ "input": input })).await?;
        let customer_id = expect_accepted(answer, "registerCustomer")?["customerId"]
            .as_str()
            .context("registerCustomer returned no id")?
            .to_string();
        Ok(Self { customer_id, skus })
    }
}

async fn post(http: &reqwest::Client, url: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
    Ok(http
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}/graphql"))?
        .json()
        .await?)
}

fn expect_accepted(answer: Value, field: &str) -> anyhow::Result<Value> {
    let payload = answer["data"][field].clone();
    if payload["status"] != "ACCEPTED" {
        bail!("{field} was not accepted: {answer}");
    }
    Ok(payload)
}

async fn client(
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    orders: usize,
    next: Arc<AtomicUsize>,
    seed: Seed,
) -> anyhow::Result<Samples> {
    let ws_url = format!("{}/graphql", url.replacen("http", "ws", 1));
    let mut request = ws_url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(request).await.with_context(|| format!("cannot open {ws_url}"))?;
    let payload = token.map_or(json!({}), |token| json!({ "authorization": format!("Bearer {token}") }));
    socket.send(Message::text(json!({ "type": "connection_init", "payload": payload }).to_string())).await?;
    expect_type(&mut socket, "connection_ack").await?;

    let mut samples = Samples::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= orders {
            return Ok(samples);
        }
        let input =
            json!({ "customerId": seed.customer_id, "items": [{ "sku": seed.skus[n % SKUS], "quantity": 1 + n % 3 }] });
        let sent = Instant::now();
        let answer = post(&http, &url, PLACE, json!({ "input": input })).await.context("placeOrder failed")?;
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
        let mut visible = false;
        loop {
            let message = next_json(&mut socket).await?;
            if message["type"] == "error" {
                bail!("subscription failed: {message}");
            }
            if message["type"] != "next" || message["id"] != id.as_str() {
                continue;
            }
            if !visible {
                samples.visible.push(accepted.elapsed());
                visible = true;
            }
            let status = &message["payload"]["data"]["orderUpdated"]["status"];
            if status == "CONFIRMED" {
                samples.confirmed.push(sent.elapsed());
            } else if status == "PENDING" {
                continue;
            } else {
                samples.not_confirmed += 1;
            }
            samples.last_final = Some(Instant::now());
            break;
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
