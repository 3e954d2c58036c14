//! What the live order page (`/app`) reads: the `customers` list and the
//! `ordersUpdated` feed, with their access rules, on both backends.

use std::time::Duration;

use gateway::Role;
use gateway::auth::issue;
use serde_json::{Value, json};

use crate::helpers::{Backend, Isolation, Subscription, TestApp, WAIT, items};

crate::on_both_backends!(
    the_feed_delivers_every_new_order_and_each_change_until_it_is_final,
    customers_are_listed_newest_first_with_cursors,
    a_customer_lists_and_follows_only_itself,
);

const FEED: &str = "subscription($customer: ID) { ordersUpdated(customerId: $customer) { id customerId status stockStatus paymentStatus version updatedAt customer { name } } }";

/// Subscribing has no acknowledgement in graphql-transport-ws, and the feed
/// starts "from now on": place orders until the feed shows one, so the
/// test knows the feed is live. Returns the ids placed.
async fn until_the_feed_is_live(app: &TestApp, feed: &mut Subscription, customer: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut placed = Vec::new();
    loop {
        let order = app.place_order(customer, items(), None).await;
        placed.push(order["orderId"].as_str().expect("an order id").to_string());
        if let Some(data) = feed.next_data_within(Duration::from_millis(500)).await {
            let id = data["ordersUpdated"]["id"].as_str().unwrap_or_default().to_string();
            assert!(placed.contains(&id), "the feed delivered an order nobody placed: {data}");
            return placed;
        }
        assert!(tokio::time::Instant::now() < deadline, "the feed delivered none of {placed:?}");
    }
}

async fn the_feed_delivers_every_new_order_and_each_change_until_it_is_final(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let mut feed = app.subscribe(FEED, json!({})).await;
    let probes = until_the_feed_is_live(&app, &mut feed, &customer).await;

    // A new order shows up, then each change of it, versions never going back.
    let placed = app.place_order(&customer, items(), None).await;
    let id = placed["orderId"].as_str().expect("an order id").to_string();
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.last().is_none_or(|order| order["status"] != "CONFIRMED") {
        let data = tokio::time::timeout_at(deadline, feed.next_data())
            .await
            .unwrap_or_else(|_| panic!("order {id} never reached CONFIRMED on the feed; saw {seen:?}"));
        let order = data["ordersUpdated"].clone();
        let from = order["id"].as_str().unwrap_or_default();
        assert!(from == id || probes.iter().any(|probe| probe == from), "unexpected order on the feed: {order}");
        if from == id {
            assert_eq!(order["customer"]["name"], "Test Customer", "{order}");
            seen.push(order);
        }
    }
    let versions: Vec<i64> = seen.iter().map(|order| order["version"].as_i64().unwrap_or(-1)).collect();
    assert!(versions.windows(2).all(|pair| pair[0] <= pair[1]), "versions went back: {versions:?}");
    assert!(seen.iter().all(|order| order["status"] == "PENDING" || order["status"] == "CONFIRMED"), "{seen:?}");
    // The same view twice in a row is dropped: notifications repeat, the feed does not.
    assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "a repeated item: {seen:?}");

    // A filter narrows the feed to one customer.
    let other = app.register_customer(10_000_000).await;
    let mut narrowed = app.subscribe(FEED, json!({ "customer": other })).await;
    let mine = until_the_feed_is_live(&app, &mut narrowed, &other).await;
    app.place_order(&customer, items(), None).await;
    let last = app.place_order(&other, items(), None).await["orderId"].as_str().expect("id").to_string();
    let data = narrowed
        .next_data_until("the other customer's order", |data| data["ordersUpdated"]["id"] == last.as_str())
        .await;
    assert_eq!(data["ordersUpdated"]["customerId"], other.as_str());
    assert!(!mine.is_empty());

    // A malformed filter is refused with a code.
    let mut bad = app.subscribe(FEED, json!({ "customer": "not-a-uuid" })).await;
    let refused = bad.next_payload().await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "INVALID_ID", "{refused}");
}

async fn customers_are_listed_newest_first_with_cursors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let register = "mutation($name: String!, $email: String!) { registerCustomer(input: { name: $name, email: $email, creditLimitCents: 100, consistency: AWAIT_VIEW }) { customerId } }";
    let mut ids = Vec::new();
    for name in ["First", "Second", "Third"] {
        let answer = app.graphql(register, json!({ "name": name, "email": format!("{name}@example.com") })).await;
        ids.push(answer["data"]["registerCustomer"]["customerId"].as_str().expect("id").to_string());
    }
    let page = "query($after: String) { customers(first: 2, after: $after) { nodes { id name } pageInfo { hasNextPage endCursor } } }";
    let first = app.graphql(page, json!({})).await;
    let names = |answer: &Value| -> Vec<String> {
        answer["data"]["customers"]["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|node| node["name"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    assert_eq!(names(&first), ["Third", "Second"], "{first}");
    assert_eq!(first["data"]["customers"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["data"]["customers"]["pageInfo"]["endCursor"].clone();
    let second = app.graphql(page, json!({ "after": cursor })).await;
    assert_eq!(names(&second), ["First"], "{second}");
    assert_eq!(second["data"]["customers"]["nodes"][0]["id"], ids[0].as_str());
    assert_eq!(second["data"]["customers"]["pageInfo"]["hasNextPage"], false);

    let forged = app.graphql(page, json!({ "after": "bm90IGEgY3Vyc29y" })).await;
    assert_eq!(forged["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{forged}");
}

const SECRET: &str = "a-test-secret-of-32-bytes-length";

async fn a_customer_lists_and_follows_only_itself(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
    })
    .await;
    let token = |role, subject: &str| issue(SECRET.as_bytes(), role, subject, Duration::from_secs(600)).expect("signs");
    let admin = token(Role::Admin, "ops");
    let (_, added) = app
        .graphql_as(
            Some(&admin),
            "mutation { addProduct(input: { sku: \"lamp\", name: \"Lamp\", priceCents: 100, initialStock: 100, consistency: AWAIT_VIEW }) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(added["data"]["addProduct"]["status"], "ACCEPTED", "{added}");
    let register = "mutation($name: String!, $email: String!) { registerCustomer(input: { name: $name, email: $email, creditLimitCents: 100000, consistency: AWAIT_VIEW }) { customerId } }";
    let mut ids = Vec::new();
    for name in ["Alice", "Bob"] {
        let (_, registered) = app
            .graphql_as(Some(&admin), register, json!({ "name": name, "email": format!("{name}@example.com") }))
            .await;
        ids.push(registered["data"]["registerCustomer"]["customerId"].as_str().expect("id").to_string());
    }
    let (alice, bob) = (ids[0].clone(), ids[1].clone());
    let alice_token = token(Role::Customer, &alice);

    let list = "{ customers(first: 10) { nodes { id } } }";
    let (_, anonymous) = app.graphql_as(None, list, json!({})).await;
    assert_eq!(anonymous["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{anonymous}");
    let (_, everyone) = app.graphql_as(Some(&admin), list, json!({})).await;
    assert_eq!(everyone["data"]["customers"]["nodes"].as_array().map(Vec::len), Some(2), "{everyone}");
    let (_, herself) = app.graphql_as(Some(&alice_token), list, json!({})).await;
    assert_eq!(herself["data"]["customers"]["nodes"], json!([{ "id": alice }]), "{herself}");

    // Asking for another customer's feed is refused; her own feed carries only her orders.
    let mut snooping = Subscription::start_as(app.address, Some(&alice_token), FEED, json!({ "customer": bob })).await;
    let refused = snooping.next_payload().await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");

    let mut feed = Subscription::start_as(app.address, Some(&alice_token), FEED, json!({})).await;
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { orderId } }";
    let order =
        |customer: &str| json!({ "input": { "customerId": customer, "items": [{ "sku": "lamp", "quantity": 1 }] } });
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut hers = Vec::new();
    let first = loop {
        // Bob's order first each round: if the feed leaked it, it would come before hers.
        let (_, bobs) = app.graphql_as(Some(&admin), place, order(&bob)).await;
        assert!(bobs["data"]["placeOrder"]["orderId"].is_string(), "{bobs}");
        let (_, placed) = app.graphql_as(Some(&alice_token), place, order(&alice)).await;
        hers.push(placed["data"]["placeOrder"]["orderId"].as_str().expect("id").to_string());
        if let Some(data) = feed.next_data_within(Duration::from_millis(500)).await {
            break data;
        }
        assert!(tokio::time::Instant::now() < deadline, "Alice's feed delivered none of {hers:?}");
    };
    // Everything on her feed is hers, until her last order is CONFIRMED (which
    // may be the first item, if the feed went live late).
    let last = hers.last().cloned().unwrap_or_default();
    let done = |data: &Value| {
        assert_eq!(data["ordersUpdated"]["customerId"], alice.as_str(), "Bob's order on Alice's feed: {data}");
        data["ordersUpdated"]["id"] == last.as_str() && data["ordersUpdated"]["status"] == "CONFIRMED"
    };
    if !done(&first) {
        feed.next_data_until("Alice's order confirmed", done).await;
    }
}
