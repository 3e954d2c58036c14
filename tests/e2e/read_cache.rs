//! The gateway's cache of `order(id)` and `orders` rows, pages and whole
//! answers (gateway/src/graphql/orders/cache.rs, answers.rs): kept until a
//! change notification says they changed, never older than a change
//! already pushed, and never kept when they read another view.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, WAIT, items};

crate::on_both_backends!(
    a_cached_order_is_read_once_and_a_read_after_a_pushed_change_sees_the_change,
    the_newest_page_is_read_once_until_an_order_changes,
    an_answer_that_read_another_view_is_never_kept,
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

/// A query over GET; the whole response body.
async fn get(app: &TestApp, query: &str, variables: Value) -> Value {
    let url = format!("http://{}/graphql", app.address);
    let variables = variables.to_string();
    let response = app.http.get(url).query(&[("query", query), ("variables", &variables)]).send().await;
    response.expect("gateway answers").json().await.expect("a JSON body")
}

async fn a_cached_order_is_read_once_and_a_read_after_a_pushed_change_sees_the_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = confirmed_order(&app).await;
    let answer = cached(&app, ONE, json!({ "id": id })).await;
    assert_eq!(answer["data"]["order"]["status"], "CONFIRMED", "{answer}");
    let page = cached(&app, PAGE, json!({})).await;
    assert_eq!(page["data"]["orders"]["edges"][0]["node"]["status"], "CONFIRMED", "{page}");
    let by_get = get(&app, ONE, json!({ "id": id })).await;
    assert_eq!(get(&app, ONE, json!({ "id": id })).await, by_get, "kept over GET too");

    let mut subscription =
        app.subscribe("subscription($id: ID!) { orderUpdated(id: $id) { status version } }", json!({ "id": id })).await;
    subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
    let cancelled = app.cancel_order(&id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let pushed = subscription.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    // Pushed, so read: the cached CONFIRMED row is gone, at once.
    let read = app.graphql(ONE, json!({ "id": id })).await;
    assert_eq!(read["data"]["order"]["status"], "CANCELLED", "read after the push {pushed}: {read}");
    let by_get = get(&app, ONE, json!({ "id": id })).await;
    assert_eq!(by_get["data"]["order"]["status"], "CANCELLED", "read over GET after the push {pushed}: {by_get}");
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

/// An order's products come from the catalog, which an order's change
/// notification does not speak for: such an answer is executed every time.
async fn an_answer_that_read_another_view_is_never_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = confirmed_order(&app).await;
    let with_stock = "query($id: ID!) { order(id: $id) { id items { sku product { available } } } }";
    let available = |answer: &Value| answer["data"]["order"]["items"][0]["product"]["available"].as_i64();
    let before = app.graphql(with_stock, json!({ "id": id })).await;
    let first = available(&before).expect("an available count");
    assert_eq!(app.graphql(with_stock, json!({ "id": id })).await, before);

    // Another order reserves the same product: this order's row is unchanged.
    let customer = app.register_customer(10_000_000).await;
    let other = app.place_order(&customer, items(), None).await;
    let other = other["orderId"].as_str().expect("an order id").to_string();
    app.wait_for_order(&other, "confirmed", |order| order["status"] == "CONFIRMED").await;
    let sku = before["data"]["order"]["items"][0]["sku"].as_str().expect("a sku").to_string();
    app.wait_for_product_sku(&sku, |product| product["available"].as_i64() < Some(first)).await;
    let after = app.graphql(with_stock, json!({ "id": id })).await;
    assert!(available(&after) < Some(first), "the catalog's change shows at once: {before} then {after}");
}
