//! The closed loop: C clients, each placing an order, following it through
//! its own `orderUpdated` subscription until the saga decides it, then
//! placing the next, until N orders. Mutations/s then equals decisions/s,
//! bounded by the business transaction's latency at that concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::Shape;
use super::client::{Gateway, next_json};
use super::cpu::CpuMark;
use super::report::{closed_loop_latency, percentiles};
use super::seed::Seed;

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
const WATCH: &str = "subscription($id: ID!) { orderUpdated(id: $id) { status rejectionCode } }";
/// The longest a client waits for its order's next change.
const NEXT_CHANGE: Duration = Duration::from_secs(30);

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

pub(crate) async fn run(gateway: &Gateway, seed: &Seed, shape: Shape, orders: usize) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = CpuMark::now();
    let started = Instant::now();
    let clients = (0..shape.concurrency).map(|_| client(gateway, seed, shape.lines, orders, &next));
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
        orders,
        shape.concurrency,
        elapsed.as_secs_f64(),
        orders as f64 / elapsed.as_secs_f64(),
        all.confirmed.len() as f64 / settled.as_secs_f64(),
        all.not_accepted,
        all.not_confirmed,
    );
    let confirmed = all.confirmed.len();
    let (place_p50, confirmed_p50) = (median_ms(&mut all.mutation), median_ms(&mut all.confirmed));
    println!(
        "closed-loop orders={orders} concurrency={} confirmed={confirmed} not_accepted={} not_confirmed={} confirmed_per_s={:.1} place_p50={place_p50} confirmed_p50={confirmed_p50} elapsed_s={:.2}",
        shape.concurrency,
        all.not_accepted,
        all.not_confirmed,
        confirmed as f64 / settled.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("placeOrder latency     {}", closed_loop_latency(&mut all.mutation));
    println!("accepted -> visible    {}", closed_loop_latency(&mut all.visible));
    println!("placeOrder -> CONFIRMED {}", closed_loop_latency(&mut all.confirmed));
    if let Some((used, percent)) = cpu.since() {
        println!("bench-cpu bench_cpu_s={used:.2} bench_cpu_pct_of_one_core={percent:.0}");
    }
    Ok(())
}

/// The median of `samples` in ms for the key=value line, `n/a` without samples.
fn median_ms(samples: &mut [Duration]) -> String {
    percentiles(samples).map_or_else(|| "n/a".into(), |p| format!("{:.1}", p.p50))
}

async fn client(
    gateway: &Gateway,
    seed: &Seed,
    lines: usize,
    orders: usize,
    next: &AtomicUsize,
) -> anyhow::Result<Samples> {
    let mut socket = gateway.subscribe_socket().await?;
    let mut samples = Samples::default();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= orders {
            return Ok(samples);
        }
        let input = seed.order(n, lines, 1 + (n % 3) as u32, None);
        let sent = Instant::now();
        let answer = gateway.post(PLACE, json!({ "input": input })).await.context("placeOrder failed")?;
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
            let message = next_json(&mut socket, NEXT_CHANGE).await?;
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
