//! Observability of the real binary: `/metrics` on `--metrics-listen`
//! (metrics are per process, so each test runs its own; an order moves the
//! counters of every process kind that served it) and `--log-format json`.

use std::net::SocketAddr;

use serde_json::json;

use crate::helpers::{Backend, Isolation, Subscription, WAIT, graphql_at, items};
use crate::processes::{Conveyor, seed_shop, server_env, wait_until_ready};

impl Conveyor {
    /// The address from the line announcing where metrics are served.
    fn metrics_address(&self) -> SocketAddr {
        let line = self.wait_for_line("metrics served on ");
        let start = line.find("metrics served on ").expect("the marker") + "metrics served on ".len();
        let rest = &line[start..];
        rest[..rest.find(' ').expect("an address, then more")].parse().expect("a socket address")
    }
}

/// One scrape's samples.
struct Scrape(String);

impl Scrape {
    async fn of(address: SocketAddr) -> Self {
        let response = reqwest::get(format!("http://{address}/metrics")).await.expect("metrics answer");
        assert!(response.status().is_success(), "GET /metrics: {}", response.status());
        let content_type = response.headers()["content-type"].to_str().expect("ascii").to_owned();
        assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
        Self(response.text().await.expect("text"))
    }

    /// The value of one series, e.g. `conveyor_commands_total{type="PlaceOrder",outcome="accepted"}`.
    fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn expect(&self, series: &str) -> f64 {
        self.value(series).unwrap_or_else(|| panic!("no `{series}` in:\n{}", self.0))
    }
}

/// Scrapes until `done` holds for the series' value (gauges that are read
/// at scrape time settle once the work is done).
async fn settles(address: SocketAddr, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = Scrape::of(address).await;
        if let Some(value) = scrape.value(series)
            && done(value)
        {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "`{series}` never settled; last scrape:\n{}", scrape.0);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Places an order and waits for it to be confirmed, over a subscription
/// left open (so the gateway counts one).
async fn confirmed_order(http: &reqwest::Client, gateway: SocketAddr, customer: &str) -> Subscription {
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let placed =
        graphql_at(http, gateway, place, json!({ "input": { "customerId": customer, "items": items() } })).await;
    assert_eq!(placed["data"]["placeOrder"]["status"], "ACCEPTED", "{placed}");
    let order_id = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    let mut subscription = Subscription::start(
        gateway,
        "subscription($id: ID!) { orderUpdated(id: $id) { status } }",
        json!({ "id": order_id }),
    )
    .await;
    subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
    subscription
}

const PLACED: &str = r#"conveyor_commands_total{type="PlaceOrder",outcome="accepted"}"#;
const MUTATIONS: &str = r#"conveyor_graphql_requests_total{operation_type="mutation",result="ok"}"#;

#[tokio::test]
async fn each_server_process_serves_the_metrics_of_its_side_and_an_order_moves_them() {
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env.push(("CONVEYOR_METRICS_LISTEN", "127.0.0.1:0".into()));
    let write_side = Conveyor::start(&["write-side"], &env);
    let read_side = Conveyor::start(&["read-side"], &env);
    let gateway = Conveyor::start(&["gateway"], &env);
    let (write_metrics, read_metrics) = (write_side.metrics_address(), read_side.metrics_address());
    let gateway_metrics = gateway.metrics_address();
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    assert_eq!(Scrape::of(write_metrics).await.value(PLACED), None, "no order yet");

    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;
    let subscription = confirmed_order(&http, address, &customer).await;

    let write = Scrape::of(write_metrics).await;
    assert_eq!(write.expect(PLACED), 1.0);
    assert_eq!(write.expect(r#"conveyor_command_duration_seconds_count{type="PlaceOrder"}"#), 1.0);
    assert!(write.expect(r#"conveyor_saga_steps_total{step="reserve",result="done"}"#) >= 1.0);
    assert_eq!(write.expect(r#"conveyor_saga_steps_total{step="confirm",result="done"}"#), 1.0);
    write.expect("conveyor_sagas_active");
    write.expect(r#"conveyor_nats_pending{consumer="write_side_order"}"#);
    write.expect(r#"conveyor_db_pool_connections{pool="write",state="idle"}"#);
    // Counts the code kept before there were metrics, exported.
    write.expect("conveyor_event_store_streams_read_total");
    write.expect("conveyor_saga_saves_apart_total");

    let read = Scrape::of(read_metrics).await;
    assert!(read.expect(r#"conveyor_projected_events_total{projection="orders"}"#) >= 2.0, "placed and confirmed");
    read.expect(r#"conveyor_projection_lag_seconds{projection="orders"}"#);
    read.expect(r#"conveyor_db_pool_connections{pool="read",state="idle"}"#);
    assert!(read.expect(r#"conveyor_projector_transactions_total{projection="orders",result="committed"}"#) >= 1.0);
    assert!(read.expect(r#"conveyor_projector_statements_total{projection="orders",kind="view"}"#) >= 1.0);
    settles(read_metrics, r#"conveyor_projection_lag_events{projection="orders"}"#, |lag| lag == 0.0).await;
    settles(read_metrics, r#"conveyor_nats_pending{consumer="projector_products"}"#, |lag| lag == 0.0).await;

    let edge = Scrape::of(gateway_metrics).await;
    // Two products, a customer, an order.
    assert!(edge.expect(MUTATIONS) >= 4.0);
    assert!(edge.expect(r#"conveyor_graphql_request_duration_seconds_count{operation_type="mutation"}"#) >= 4.0);
    assert_eq!(edge.expect("conveyor_subscriptions_active"), 1.0);
    assert_eq!(edge.expect("conveyor_websocket_connections"), 1.0);
    edge.expect(r#"conveyor_db_pool_connections{pool="gateway",state="idle"}"#);

    // The values move: one more order, one more command; the subscription
    // and its connection close.
    drop(subscription);
    let next = confirmed_order(&http, address, &customer).await;
    assert_eq!(Scrape::of(write_metrics).await.expect(PLACED), 2.0);
    drop(next);
    settles(gateway_metrics, "conveyor_websocket_connections", |open| open == 0.0).await;
    settles(gateway_metrics, "conveyor_subscriptions_active", |open| open == 0.0).await;
}

#[tokio::test]
async fn the_embedded_process_serves_every_sides_metrics_on_one_listener() {
    let isolation = Isolation::new(Backend::Embedded).await;
    let data_dir = isolation.data_dir.clone().expect("a data directory").display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str(), "--metrics-listen", "127.0.0.1:0"];
    let embedded = Conveyor::start(&args, &[]);
    let metrics = embedded.metrics_address();
    let address = embedded.graphql_address();
    wait_until_ready(address).await;

    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;
    let _subscription = confirmed_order(&http, address, &customer).await;
    let scrape = Scrape::of(metrics).await;
    assert_eq!(scrape.expect(PLACED), 1.0);
    assert!(scrape.expect(MUTATIONS) >= 4.0);
    assert!(scrape.expect(r#"conveyor_projected_events_total{projection="orders"}"#) >= 2.0);
    assert_eq!(scrape.expect("conveyor_subscriptions_active"), 1.0);
    scrape.expect(r#"conveyor_db_pool_connections{pool="events",state="idle"}"#);
    settles(metrics, r#"conveyor_projection_lag_events{projection="orders"}"#, |lag| lag == 0.0).await;
    settles(metrics, "conveyor_sagas_active", |open| open >= 0.0).await;
}

#[tokio::test]
async fn metrics_are_off_unless_asked_for() {
    let isolation = Isolation::new(Backend::Embedded).await;
    let data_dir = isolation.data_dir.clone().expect("a data directory").display().to_string();
    let embedded = Conveyor::start(&["--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str()], &[]);
    wait_until_ready(embedded.graphql_address()).await;
    assert!(!embedded.log_text().contains("metrics served"), "{}", embedded.log_text());
}

#[tokio::test]
async fn conveyor_all_serves_every_sides_metrics_on_one_listener() {
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env.push(("CONVEYOR_METRICS_LISTEN", "127.0.0.1:0".into()));
    let all = Conveyor::start(&["all"], &env);
    let metrics = all.metrics_address();
    let address = all.graphql_address();
    wait_until_ready(address).await;

    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;
    let _subscription = confirmed_order(&http, address, &customer).await;
    let scrape = Scrape::of(metrics).await;
    assert_eq!(scrape.expect(PLACED), 1.0);
    assert!(scrape.expect(MUTATIONS) >= 4.0);
    assert!(scrape.expect(r#"conveyor_projected_events_total{projection="orders"}"#) >= 2.0);
    for pool in ["write", "read", "gateway"] {
        scrape.expect(&format!(r#"conveyor_db_pool_connections{{pool="{pool}",state="idle"}}"#));
    }
    scrape.expect(r#"conveyor_nats_pending{consumer="write_side_payment"}"#);
    scrape.expect(r#"conveyor_nats_pending{consumer="projector_customers"}"#);
}

#[tokio::test]
async fn with_log_format_json_every_log_line_is_a_json_object() {
    let isolation = Isolation::new(Backend::Embedded).await;
    let data_dir = isolation.data_dir.clone().expect("a data directory").display().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data-dir", data_dir.as_str(), "--log-format", "json"];
    let embedded = Conveyor::start(&args, &[]);
    wait_until_ready(embedded.graphql_address()).await;
    let log = embedded.log_text();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"))).collect();
    let running = lines
        .iter()
        .find(|line| line["fields"]["message"].as_str().is_some_and(|message| message.contains("Conveyor is running")))
        .expect("the start-up line");
    assert_eq!(running["level"], "INFO", "{running}");
    assert!(running["timestamp"].is_string(), "{running}");
}

#[tokio::test]
async fn a_dead_lettered_command_is_counted_by_its_source() {
    let isolation = Isolation::new(Backend::Server).await;
    let mut env = server_env(&isolation);
    env.push(("CONVEYOR_METRICS_LISTEN", "127.0.0.1:0".into()));
    let write_side = Conveyor::start(&["write-side"], &env);
    let metrics = write_side.metrics_address();
    // Logged by the consumers' tasks, before or after the metrics line.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !write_side.log_text().contains("write side consuming commands") {
        assert!(tokio::time::Instant::now() < deadline, "no consumer started:\n{}", write_side.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let dead_letters = r#"conveyor_dead_letters_total{source="write-side"}"#;
    assert_eq!(Scrape::of(metrics).await.value(dead_letters), None, "none yet");

    let client = crate::helpers::nats_client().await;
    let js = async_nats::jetstream::new(client);
    let subject = format!("{}.cmd.order.PlaceOrder", isolation.namespace);
    js.publish(subject, "{not json".into()).await.expect("publish").await.expect("stored");
    assert_eq!(settles(metrics, dead_letters, |count| count >= 1.0).await, 1.0);
}
