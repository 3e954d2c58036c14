//! `conveyor bench --compare-grpc <address>`: the cost of one call over
//! each API, side by side in one run against one gateway. C clients each
//! place an order (answered once ACCEPTED) and read it back, N times, first
//! over GraphQL (`placeOrder`, `order`), then over gRPC (`PlaceOrder`,
//! `GetOrder`), with the same seed, shape and concurrency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use gateway::grpc::proto::orders_client::OrdersClient;
use gateway::grpc::proto::{CommandStatus, GetOrderRequest, OrderLine, PlaceOrderRequest};
use serde_json::json;
use tonic::transport::Channel;

use super::Shape;
use super::client::Gateway;
use super::report::percentiles;
use super::seed::Seed;

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
const GET: &str = "query($id: ID!) { order(id: $id) { id status version } }";

#[derive(Default)]
struct Samples {
    place: Vec<Duration>,
    get: Vec<Duration>,
}

pub(crate) async fn run(
    gateway: &Gateway,
    seed: &Seed,
    shape: Shape,
    orders: usize,
    grpc: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect().await.context("cannot reach gRPC")?;
    let authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        token.map(|token| format!("Bearer {token}").parse()).transpose()?;
    for api in ["graphql", "grpc"] {
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        let clients = (0..shape.concurrency).map(|_| async {
            let mut samples = Samples::default();
            let mut client = OrdersClient::new(channel.clone());
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders {
                    return Ok::<_, anyhow::Error>(samples);
                }
                if api == "graphql" {
                    graphql_call(gateway, seed, shape, n, &mut samples).await?;
                } else {
                    grpc_call(&mut client, authorization.as_ref(), seed, shape, n, &mut samples).await?;
                }
            }
        });
        let mut all = Samples::default();
        for samples in futures::future::join_all(clients).await {
            let samples = samples?;
            all.place.extend(samples.place);
            all.get.extend(samples.get);
        }
        let elapsed = started.elapsed();
        let (place, get) = (percentiles(&mut all.place), percentiles(&mut all.get));
        let ms = |p: Option<f64>| p.map_or_else(|| "n/a".to_string(), |p| format!("{p:.2}"));
        println!(
            "api-compare api={api} orders={orders} concurrency={} place_p50={} place_p95={} get_p50={} get_p95={} \
             calls_per_s={:.0}",
            shape.concurrency,
            ms(place.as_ref().map(|p| p.p50)),
            ms(place.as_ref().map(|p| p.p95)),
            ms(get.as_ref().map(|p| p.p50)),
            ms(get.as_ref().map(|p| p.p95)),
            (2 * orders) as f64 / elapsed.as_secs_f64(),
        );
    }
    Ok(())
}

async fn graphql_call(
    gateway: &Gateway,
    seed: &Seed,
    shape: Shape,
    n: usize,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let sent = Instant::now();
    let answer = gateway.post(PLACE, json!({ "input": seed.order(n, shape.lines, 1, None) })).await?;
    samples.place.push(sent.elapsed());
    let payload = &answer["data"]["placeOrder"];
    if payload["status"] != "ACCEPTED" {
        bail!("placeOrder was not accepted: {answer}");
    }
    let sent = Instant::now();
    let answer = gateway.post(GET, json!({ "id": payload["orderId"] })).await?;
    samples.get.push(sent.elapsed());
    if answer.get("errors").is_some() {
        bail!("order failed: {answer}");
    }
    Ok(())
}

async fn grpc_call(
    client: &mut OrdersClient<Channel>,
    authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    seed: &Seed,
    shape: Shape,
    n: usize,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let items = seed.items(n, shape.lines, 1);
    let items = items
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| OrderLine {
                    sku: line["sku"].as_str().unwrap_or_default().to_string(),
                    quantity: 1,
                    expected_unit_price_cents: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let place = PlaceOrderRequest { customer_id: seed.customer_id.clone(), items, ..Default::default() };
    let sent = Instant::now();
    let placed = client.place_order(with_token(place, authorization)).await.context("PlaceOrder failed")?.into_inner();
    samples.place.push(sent.elapsed());
    if placed.status() != CommandStatus::Accepted {
        bail!("PlaceOrder was not accepted: {placed:?}");
    }
    let sent = Instant::now();
    let read = client.get_order(with_token(GetOrderRequest { order_id: placed.order_id }, authorization)).await;
    samples.get.push(sent.elapsed());
    // Not projected yet is NOT_FOUND here where GraphQL answers null: the same read.
    match read {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::NotFound => {}
        Err(status) => bail!("GetOrder failed: {status:?}"),
    }
    Ok(())
}

fn with_token<T>(
    message: T,
    authorization: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.clone());
    }
    request
}
