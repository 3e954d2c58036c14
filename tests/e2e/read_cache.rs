//! The gateway's cache of `order(id)` and `orders` answers
//! (gateway/src/graphql/orders/cache.rs): kept until a change notification
//! says they changed, and never older than a change already pushed.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, WAIT, items};

crate::on_both_backends!(
    a_cached_order_is_read_once_and_a_read_after_a_pushed_change_sees_the_change,
    the_newest_page_is_read_once_until_an_order_changes,
);

const ONE: &str = "query($id: ID!) { order(id: $id) { id status version } }";
const PAGE: &str = "{ orders(first: 20) { edges { node { id status version } } } }";

async fn confirmed_order(app: &TestApp) -> String {
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
    let id = placed["orderId"].as_str().expect("an order id").to_string();
    app.wait_for_order(&id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    id
}

/// Reads `query` until it answers the same twice in a row without a
/// statement (the cache's watch may still be starting); the answer.
async fn cached(app: &TestApp, query: &str, variables: Value) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let first = app.graphql(query, variables.clone()).await;
        let before = app.gateway_views.statements();
        let second = app.graphql(query, variables.clone()).await;
        if app.gateway_views.statements() == before && first == second {
            return second;
        }
        assert!(tokio::time::Instant::now() < deadline, "{query} was never answered from the cache: {second}");
    }
}

async fn a_cached_order_is_read_once_and_a_read_after_a_pushed_change_sees_the_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = confirmed_order(&app).await;
    let answer = cached(&app, ONE, json!({ "id": id })).await;
    assert_eq!(answer["data"]["order"]["status"], "CONFIRMED", "{answer}");

    let mut subscription =
        app.subscribe("subscription($id: ID!) { orderUpdated(id: $id) { status version } }", json!({ "id": id })).await;
    subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
    let cancelled = app.cancel_order(&id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let pushed = subscription.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    // Pushed, so read: the cached CONFIRMED row is gone, at once.
    let read = app.graphql(ONE, json!({ "id": id })).await;
    assert_eq!(read["data"]["order"]["status"], "CANCELLED", "read after the push {pushed}: {read}");
    let page = app.graphql(PAGE, json!({})).await;
    let listed = page["data"]["orders"]["edges"].as_array().and_then(|edges| {
        edges.iter().find(|edge| edge["node"]["id"] == id.as_str()).map(|edge| edge["node"]["status"].clone())
    });
    assert_eq!(listed, Some(json!("CANCELLED")), "listed after the push: {page}");
    let version = pushed["orderUpdated"]["version"].as_u64().expect("a version");
    assert!(read["data"]["order"]["version"].as_u64() >= Some(version), "never older than the push: {read}");
}

async fn the_newest_page_is_read_once_until_an_order_changes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = confirmed_order(&app).await;
    let page = cached(&app, PAGE, json!({})).await;
    assert_eq!(page["data"]["orders"]["edges"][0]["node"]["status"], "CONFIRMED", "{page}");

    // A change of any order may move the page: it is read again.
    let cancelled = app.cancel_order(&id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = app.graphql(PAGE, json!({})).await;
        if page["data"]["orders"]["edges"][0]["node"]["status"] == "CANCELLED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never showed the cancellation: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}
