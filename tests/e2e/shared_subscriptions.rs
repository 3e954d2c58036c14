//! Subscriptions that share work: however many `orderUpdated`
//! subscriptions follow one order, the gateway watches its changes once
//! and reads its row once per change (gateway/src/graphql/orders/live.rs);
//! however many `ordersUpdated` follow one scope, likewise
//! (gateway/src/graphql/orders/live_list.rs).

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Backend, Subscription, TestApp, WAIT, items};

crate::on_both_backends!(
    twenty_subscribers_of_one_order_cost_one_read_per_change,
    twenty_subscribers_of_the_order_list_cost_one_read_per_change,
);

const SUBSCRIBERS: usize = 20;
const FOLLOW: &str = "subscription($id: ID!) { orderUpdated(id: $id) { id status paymentStatus stockStatus version } }";

async fn twenty_subscribers_of_one_order_cost_one_read_per_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
    let id = placed["orderId"].as_str().expect("an order id").to_string();
    // Confirmed, the order rests until it is cancelled.
    app.wait_for_order(&id, "confirmed", |order| order["status"] == "CONFIRMED").await;

    // Twenty subscribers (over twenty sockets) get their first value from one read.
    let reads = || app.gateway_views.statements();
    let before = reads();
    let mut subscribers = join_all((0..SUBSCRIBERS).map(|_| app.subscribe(FOLLOW, json!({ "id": id })))).await;
    for subscriber in &mut subscribers {
        let first = subscriber.next_data().await;
        assert_eq!(first["orderUpdated"]["status"], "CONFIRMED", "{first}");
    }
    let first_reads = reads() - before;
    // Two if the confirmation's own notification reached the gateway after its first read.
    assert!(first_reads <= 2, "{SUBSCRIBERS} subscribers' first values cost {first_reads} reads");

    // The cancellation changes the row a few times (cancelled, refunded,
    // each line's stock released): each change is read once for all twenty.
    // (Open mode: cancelling reads no view; one read per subscriber would be twenty at least.)
    let before = reads();
    let cancelled = app.cancel_order(&id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let done = |data: &serde_json::Value| {
        let order = &data["orderUpdated"];
        order["status"] == "CANCELLED" && order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
    };
    for subscriber in &mut subscribers {
        subscriber.next_data_until("the cancellation, refunded and released", done).await;
    }
    let lines = items().as_array().map_or(0, Vec::len) as u64;
    let changes = 2 + lines;
    let change_reads = reads() - before;
    assert!(
        (1..=changes).contains(&change_reads),
        "{SUBSCRIBERS} subscribers cost {change_reads} reads for at most {changes} changes"
    );
}

const LIST: &str = "subscription { ordersUpdated { id status paymentStatus stockStatus version } }";

/// Waits until `feed` shows order `id` CONFIRMED (the end of its placement).
async fn until_confirmed(feed: &mut Subscription, id: &str) {
    feed.next_data_until("the order confirmed", |data: &Value| {
        data["ordersUpdated"]["id"] == id && data["ordersUpdated"]["status"] == "CONFIRMED"
    })
    .await;
}

async fn twenty_subscribers_of_the_order_list_cost_one_read_per_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let reads = || app.gateway_views.statements();
    let mut feeds = join_all((0..SUBSCRIBERS).map(|_| app.subscribe(LIST, json!({})))).await;

    // The list starts "from now on" with no acknowledgement: place probe
    // orders until every feed has shown one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut probes = Vec::new();
    let mut live = vec![false; SUBSCRIBERS];
    while live.contains(&false) {
        assert!(tokio::time::Instant::now() < deadline, "feeds {live:?} never showed any of {probes:?}");
        let probe = app.place_order(&customer, items(), None).await;
        probes.push(probe["orderId"].as_str().expect("an order id").to_string());
        for (feed, live) in feeds.iter_mut().zip(&mut live) {
            if !*live {
                *live = feed.next_data_within(Duration::from_millis(500)).await.is_some();
            }
        }
    }
    // Settled in the view; a probe's change still on its way is read once
    // too, well within the bound below.
    for probe in &probes {
        app.wait_for_order(probe, "confirmed", |order| order["status"] == "CONFIRMED").await;
    }

    // One order placed: each of its changes (placed, stock, payment,
    // confirmed) is read once for all twenty; one read per subscriber
    // would be twenty for its first change alone.
    let before = reads();
    let placed = app.place_order(&customer, items(), None).await;
    let id = placed["orderId"].as_str().expect("an order id").to_string();
    for feed in &mut feeds {
        until_confirmed(feed, &id).await;
    }
    let change_reads = reads() - before;
    assert!(
        (1..SUBSCRIBERS as u64).contains(&change_reads),
        "{SUBSCRIBERS} list subscribers cost {change_reads} reads for one order's placement"
    );
}
