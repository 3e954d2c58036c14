//! `conveyor projection rebuild`: every view rebuilt by the real binary
//! while orders are placed and shipped, read and followed all the time;
//! no read fails, no row's version steps back, a row the live view had
//! wrong is put right and announced (the gateway had cached it), a row no
//! event made is removed, afterwards the views equal a replay of the event
//! store, and rebuilding them again, quiet, writes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use read_side::orders::{OrderRepository, OrderStatus};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, Isolation, Subscription, TestApp, WAIT, assert_views_match_a_replay, graphql_at, is_final, items,
    nats_client, side_nats_url,
};

crate::on_both_backends!(every_view_rebuilt_under_load_switches_in_with_no_error_and_no_step_back);

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
/// Clients placing and shipping orders at once, each as fast as it is answered.
const PLACERS: usize = 3;
const SHIP: &str = "mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status } }";

/// Runs `conveyor projection rebuild NAME` on the isolation's store (and
/// its NATS namespace in server mode, as the read side's user); returns
/// what it printed.
async fn rebuild(isolation: &Isolation, name: &str) -> String {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"));
    command.env_remove("DATABASE_URL").env_remove("NATS_URL").args(["--namespace", &isolation.namespace]);
    match isolation.backend {
        Backend::Server => command.args([
            "projection",
            "rebuild",
            name,
            "--database",
            &isolation.server().database,
            "--nats",
            &side_nats_url("read-side"),
        ]),
        Backend::Embedded => {
            let dir = isolation.data_dir.as_ref().expect("a data directory");
            command.arg("--data-dir").arg(dir).args(["projection", "rebuild", name])
        }
    };
    let output = tokio::time::timeout(WAIT * 3, command.output())
        .await
        .unwrap_or_else(|_| panic!("the rebuild of {name} ends within the bound"))
        .expect("conveyor projection rebuild runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{}{stdout}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with(&format!("rebuilt {name}:")), "{stdout}");
    stdout
}

/// Places orders and ships earlier ones until `stop`; returns the orders placed.
async fn place_and_ship(
    address: SocketAddr,
    customer: String,
    stop: Arc<AtomicBool>,
    placed: Arc<AtomicUsize>,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut ids: Vec<String> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let answer =
            graphql_at(&http, address, PLACE, json!({ "input": { "customerId": customer, "items": items() } })).await;
        assert_eq!(answer["data"]["placeOrder"]["status"], "ACCEPTED", "{answer}");
        ids.push(answer["data"]["placeOrder"]["orderId"].as_str().expect("an order id").to_owned());
        placed.fetch_add(1, Ordering::SeqCst);
        // An earlier order, confirmed by now or not (then refused: a domain answer).
        if let Some(earlier) = ids.len().checked_sub(4).map(|at| ids[at].clone()) {
            let answer = graphql_at(&http, address, SHIP, json!({ "id": earlier })).await;
            assert!(answer["errors"].is_null(), "{answer}");
        }
    }
    ids
}

/// The highest version each (query, order) was seen at; panics on a step back.
#[derive(Default)]
struct Versions(HashMap<(&'static str, String), i64>);

impl Versions {
    fn see(&mut self, source: &'static str, order: &Value) {
        let id = order["id"].as_str().unwrap_or_else(|| panic!("an id in {order}")).to_owned();
        let version = order["version"].as_i64().unwrap_or_else(|| panic!("a version in {order}"));
        let highest = self.0.entry((source, id.clone())).or_insert(version);
        assert!(version >= *highest, "{source} showed order {id} at version {version} after {highest}");
        *highest = version;
    }
}

/// Reads `orders` and `order(id)` until `stop`, asserting no error and no step back.
async fn read(address: SocketAddr, stop: Arc<AtomicBool>, rounds: Arc<AtomicUsize>) {
    let http = reqwest::Client::new();
    let mut versions = Versions::default();
    while !stop.load(Ordering::SeqCst) {
        let page =
            graphql_at(&http, address, "{ orders(first: 20) { edges { node { id version } } } }", json!({})).await;
        assert!(page["errors"].is_null(), "{page}");
        let edges = page["data"]["orders"]["edges"].as_array().cloned().unwrap_or_default();
        for edge in &edges {
            versions.see("orders", &edge["node"]);
        }
        for edge in edges.iter().take(5) {
            let one = graphql_at(
                &http,
                address,
                "query($id: ID!) { order(id: $id) { id version } }",
                json!({ "id": edge["node"]["id"] }),
            )
            .await;
            assert!(one["errors"].is_null() && one["data"]["order"].is_object(), "{one}");
            versions.see("order", &one["data"]["order"]);
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
}

/// Follows `ordersUpdated` until `stop`: every message is data, no order steps back.
async fn follow(mut subscription: Subscription, stop: Arc<AtomicBool>) -> usize {
    let mut versions = Versions::default();
    let mut received = 0;
    while !stop.load(Ordering::SeqCst) {
        if let Some(data) = subscription.next_data_within(Duration::from_millis(100)).await {
            versions.see("ordersUpdated", &data["ordersUpdated"]);
            received += 1;
        }
    }
    received
}

/// Waits (bounded) until `counter` reaches `at_least`.
async fn until(what: &str, counter: &AtomicUsize, at_least: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while counter.load(Ordering::SeqCst) < at_least {
        assert!(tokio::time::Instant::now() < deadline, "{what}: {} of {at_least}", counter.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_view_rebuilt_under_load_switches_in_with_no_error_and_no_step_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let first = app.place_order(&customer, items(), None).await;
    let wronged = first["orderId"].as_str().expect("an order id").to_owned();
    // Confirmed, as the view says (read beside the gateway, which would cache it).
    let orders = OrderRepository::new(app.gateway_views.clone());
    let deadline = tokio::time::Instant::now() + WAIT;
    while orders.get(&wronged).await.expect("a view read").is_none_or(|order| order.status != OrderStatus::Confirmed) {
        assert!(tokio::time::Instant::now() < deadline, "order {wronged} was never confirmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The live view gets a row wrong behind the projector's back (a column
    // no later event of a confirmed order writes), and the gateway caches
    // the wrong row: a second read of it runs no statement.
    let (_, views) = app.isolation.pools().await;
    sqlx::query("UPDATE orders SET rejection_reason = 'wrong' WHERE order_id = $1")
        .bind(&wronged)
        .execute(&views)
        .await
        .expect("a row made wrong");
    // And a row no event made (the oldest, out of the pages read below).
    let ghost = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, status, items, total_cents, version, placed_at, updated_at) \
         VALUES ($1, $2, 'CONFIRMED', '[]', 0, 1, 0, 0)",
    )
    .bind(&ghost)
    .bind(&customer)
    .execute(&views)
    .await
    .expect("a row no event made");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cached = app.order(&wronged).await;
        let statements = app.gateway_views.statements();
        let again = app.order(&wronged).await;
        if again["rejectionReason"] == "wrong" && app.gateway_views.statements() == statements {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway never cached the wrong row: {cached} {again}");
    }
    let announced = match backend {
        Backend::Server => {
            let subject = format!("{}.changed.orders.{wronged}.*", app.isolation.namespace);
            let subscriber = nats_client().await.subscribe(subject).await.expect("subscribed");
            Some(subscriber)
        }
        Backend::Embedded => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (placed, rounds) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let following = Subscription::start(app.address, "subscription { ordersUpdated { id version } }", json!({})).await;
    let load: Vec<_> = (0..PLACERS)
        .map(|_| tokio::spawn(place_and_ship(app.address, customer.clone(), stop.clone(), placed.clone())))
        .collect();
    let reader = tokio::spawn(read(app.address, stop.clone(), rounds.clone()));
    let follower = tokio::spawn(follow(following, stop.clone()));
    until("orders placed before the rebuilds", &placed, 5).await;
    until("reads before the rebuilds", &rounds, 3).await;

    for name in ["orders", "customers", "products"] {
        let before = placed.load(Ordering::SeqCst);
        let printed = rebuild(&app.isolation, name).await;
        eprintln!("{printed}");
        // The live projector goes on, on the switched-in copy.
        until(&format!("orders placed after the {name} rebuild"), &placed, before + 3).await;
    }
    let reads = rounds.load(Ordering::SeqCst);
    until("reads after the rebuilds", &rounds, reads + 3).await;
    stop.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    for placer in load {
        ids.extend(placer.await.expect("the load ran without a failure"));
    }
    reader.await.expect("every read answered, no version stepped back");
    let received = follower.await.expect("the subscription answered throughout, no version stepped back");
    assert!(received > 0, "the subscription pushed changes");

    // The wrong row is right again, and was announced: the gateway drops
    // what it cached (server: over NATS; embedded: the running process
    // finds the switch's announcements).
    let reason: Option<String> = sqlx::query_scalar("SELECT rejection_reason FROM orders WHERE order_id = $1")
        .bind(&wronged)
        .fetch_one(&views)
        .await
        .expect("the row");
    assert_eq!(reason, None, "the rebuild put the row right");
    let ghosts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE order_id = $1")
        .bind(&ghost)
        .fetch_one(&views)
        .await
        .expect("a count");
    assert_eq!(ghosts, 0, "the rebuild removed the row no event made");
    views.close().await;
    app.wait_for_order(&wronged, "right again through the gateway", |order| order["rejectionReason"].is_null()).await;
    if let Some(mut subscriber) = announced {
        let message = tokio::time::timeout(WAIT, subscriber.next())
            .await
            .expect("the rebuild announced the row it changed")
            .expect("a message");
        let change: Value = serde_json::from_slice(&message.payload).expect("a view change");
        assert_eq!(change["id"], wronged.as_str(), "{change}");
    }

    for id in &ids {
        app.wait_for_order(id, "a final status", is_final).await;
    }
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;

    // A view that is right and quiet is rebuilt to the very same rows.
    for name in ["orders", "customers", "products"] {
        let printed = rebuild(&app.isolation, name).await;
        assert!(printed.contains("wrote 0 rows and removed 0"), "{printed}");
    }
}
