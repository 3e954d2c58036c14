//! Admission at the edge (invariant 9): past a limit, the gateway says
//! "busy" — `OVERLOADED` with `retryAfterSeconds`, HTTP 503 with
//! `Retry-After` — before anything is dispatched, and the refused request
//! changes nothing.

use std::time::Duration;

use conveyor::config::Domain;
use reqwest::header::{ACCEPT, RETRY_AFTER};
use schema::envelope::derived_id;
use serde_json::{Value, json};

use crate::helpers::{Backend, Isolation, Subscription, TestApp, WAIT, is_final, items};

crate::on_both_backends!(
    with_the_order_backlog_at_its_limit_a_new_order_is_refused_and_changes_nothing,
    with_every_in_flight_slot_taken_a_mutation_is_refused_before_it_is_sent,
);

const PLACE_ORDER: &str =
    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { commandId status orderId error { code } } }";

/// A placeOrder POSTed as a GraphQL-over-HTTP client would: the status, the
/// `Retry-After` header and the body.
async fn post_place_order(app: &TestApp, customer: &str, key: &str) -> (u16, Option<String>, Value) {
    let response = app
        .http
        .post(format!("http://{}/graphql", app.address))
        .header(ACCEPT, "application/graphql-response+json")
        .json(&json!({ "query": PLACE_ORDER, "variables": { "input": { "customerId": customer, "items": items(), "idempotencyKey": key } } }))
        .send()
        .await
        .expect("gateway answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|value| value.to_str().ok()).map(str::to_string);
    (status, retry_after, response.json().await.expect("a JSON body"))
}

/// The order a placeOrder with `key` names (open mode: the anonymous actor).
fn order_id_for_key(key: &str) -> String {
    let command_id = derived_id("placeOrder", &format!("anonymous:{key}"));
    derived_id("order", &command_id.to_string()).to_string()
}

fn assert_overloaded(status: u16, retry_after: Option<String>, body: &Value) {
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"), "Retry-After in seconds: {body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["extensions"]["code"], "OVERLOADED", "{body}");
    assert_eq!(errors[0]["extensions"]["retryAfterSeconds"], 1, "{body}");
    assert!(body.get("data").is_none_or(Value::is_null), "nothing was executed: {body}");
}

async fn listed_orders(app: &TestApp) -> Vec<String> {
    let answer = app.graphql("{ orders(first: 50) { edges { node { id } } } }", json!({})).await;
    let edges = answer["data"]["orders"]["edges"].as_array().cloned().unwrap_or_default();
    edges.iter().filter_map(|edge| edge["node"]["id"].as_str().map(str::to_string)).collect()
}

/// Waits until the gateway's backlog reading satisfies `done`.
async fn wait_for_backlog(app: &TestApp, what: &str, done: impl Fn(u64) -> bool) {
    let mut readings = app.admission.undecided_orders();
    let seen =
        matches!(tokio::time::timeout(WAIT, readings.wait_for(|reading| reading.is_some_and(&done))).await, Ok(Ok(_)));
    let last = *app.admission.undecided_orders().borrow();
    assert!(seen, "the gateway never saw {what}; last reading {last:?}");
}

async fn with_the_order_backlog_at_its_limit_a_new_order_is_refused_and_changes_nothing(backend: Backend) {
    // Payments take 4 s, so the first two orders stay undecided (their sagas
    // active) while the third is tried; the saga waits far longer than that.
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.max_undecided_orders = 2;
        common.domain = Domain {
            payment_latency: Duration::from_secs(4),
            saga_step_timeout: Duration::from_secs(60),
            saga_timeout: Duration::from_secs(120),
            ..Domain::default()
        };
    })
    .await;
    let customer = app.shop().await;
    let first = app.place_order(&customer, items(), Some("first")).await;
    let second = app.place_order(&customer, items(), Some("second")).await;
    assert_eq!(first["status"], "ACCEPTED", "{first}");
    assert_eq!(second["status"], "ACCEPTED", "{second}");
    wait_for_backlog(&app, "two undecided orders", |undecided| undecided >= 2).await;

    // A third order: refused at once, over HTTP...
    let (status, retry_after, body) = post_place_order(&app, &customer, "third").await;
    assert_overloaded(status, retry_after, &body);
    // ... and over WebSocket, where the error carries the code.
    let mut socket = Subscription::start(
        app.address,
        PLACE_ORDER,
        json!({ "input": { "customerId": customer, "items": items(), "idempotencyKey": "third-ws" } }),
    )
    .await;
    let payload = socket.next_payload().await;
    assert_eq!(payload["errors"][0]["extensions"]["code"], "OVERLOADED", "{payload}");
    assert_eq!(payload["errors"][0]["extensions"]["retryAfterSeconds"], 1, "{payload}");

    // Other work stays open: the catalog takes a product meanwhile.
    app.add_product("lamp-2", 4500, 10).await;
    // A retry of an order already accepted adds no work: it gets its stored answer.
    let again = app.place_order(&customer, items(), Some("first")).await;
    assert_eq!(again["status"], "ACCEPTED", "{again}");
    assert_eq!(again["orderId"], first["orderId"], "the same order: {again}");

    // The refused orders changed nothing: no events, not in the view.
    for key in ["third", "third-ws"] {
        let refused = order_id_for_key(key);
        let events = schema::ports::EventLog::read_stream(&app.store, "order", &refused, 1, u64::MAX)
            .await
            .expect("read the refused order's stream");
        assert!(events.is_empty(), "a refused order has no events: {events:?}");
        assert!(app.order(&refused).await.is_null(), "a refused order is not in the view");
    }
    for order in [&first, &second] {
        let id = order["orderId"].as_str().expect("order id");
        app.wait_for_order(id, "decided", is_final).await;
    }
    let mut listed = listed_orders(&app).await;
    listed.sort();
    let mut accepted = vec![
        first["orderId"].as_str().unwrap_or_default().to_string(),
        second["orderId"].as_str().unwrap_or_default().to_string(),
    ];
    accepted.sort();
    assert_eq!(listed, accepted, "only the two accepted orders exist");

    // Decided, the orders leave the backlog, and a new order is taken again.
    wait_for_backlog(&app, "the backlog drain below its limit", |undecided| undecided < 2).await;
    let (status, retry_after, body) = post_place_order(&app, &customer, "fourth").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(retry_after, None);
    assert_eq!(body["data"]["placeOrder"]["status"], "ACCEPTED", "{body}");
}

async fn with_every_in_flight_slot_taken_a_mutation_is_refused_before_it_is_sent(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.max_inflight_commands = 1;
    })
    .await;
    let customer = app.shop().await;

    // The test holds the one slot, as a dispatch waiting for its outcome
    // would (gateway/src/graphql/commands.rs proves a dispatch holds it).
    let slot = app.admission.try_command_permit().expect("the one slot is free between requests");
    let (status, retry_after, body) = post_place_order(&app, &customer, "while-full").await;
    assert_overloaded(status, retry_after, &body);
    let refused = order_id_for_key("while-full");
    assert_eq!(app.count_events("order", &refused, "OrderPlaced").await, 0, "nothing was sent");
    // Every mutation needs a slot; queries need none.
    let (_, register) = app
        .graphql_as(
            None,
            "mutation { registerCustomer(input: { name: \"N\", email: \"n@example.com\", creditLimitCents: 1 }) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(register["errors"][0]["extensions"]["code"], "OVERLOADED", "{register}");
    assert_eq!(app.product("book-1").await["sku"], "book-1", "queries are not limited");

    // The slot freed, the same request is taken.
    drop(slot);
    let (status, _, body) = post_place_order(&app, &customer, "while-full").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["placeOrder"]["status"], "ACCEPTED", "{body}");
    assert_eq!(body["data"]["placeOrder"]["orderId"], refused.as_str(), "{body}");
    assert!(app.admission.try_command_permit().is_ok(), "the answered mutation gave its slot back");
}
