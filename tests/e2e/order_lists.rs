//! What GraphQL clients expect of the orders connection: `totalCount`,
//! status lists, `placedAt` ranges, both sort orders; and a total that is
//! null until the catalog has priced every line.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, items};

crate::on_both_backends!(
    orders_are_counted_filtered_by_statuses_and_time_and_sorted_both_ways,
    an_order_the_catalog_never_priced_has_no_total,
);

const LIST: &str = "query($first: Int, $after: String, $statuses: [OrderStatus!], $from: DateTime, $before: DateTime, \
     $order: OrderSort! = NEWEST_FIRST) { orders(first: $first, after: $after, statuses: $statuses, placedFrom: $from, \
     placedBefore: $before, orderBy: $order) { totalCount edges { cursor node { id placedAt } } pageInfo { hasNextPage } } }";

fn ids(response: &Value) -> Vec<String> {
    response["data"]["orders"]["edges"]
        .as_array()
        .map(|edges| edges.iter().filter_map(|edge| edge["node"]["id"].as_str().map(String::from)).collect())
        .unwrap_or_else(|| panic!("no edges: {response}"))
}

async fn orders_are_counted_filtered_by_statuses_and_time_and_sorted_both_ways(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let mut placed = Vec::new();
    let mut placed_at = Vec::new();
    for _ in 0..4 {
        let order = app.place_order(&customer, items(), None).await;
        let id = order["orderId"].as_str().expect("an order id").to_string();
        let order = app.wait_for_order(&id, "confirmed", |order| order["status"] == "CONFIRMED").await;
        placed_at.push(order["placedAt"].as_str().expect("placedAt").to_string());
        placed.push(id);
    }
    app.cancel_order(&placed[1], "test", None).await;
    app.wait_for_order(&placed[1], "cancelled", |order| order["status"] == "CANCELLED").await;

    // Both orders, paged: the cursor moves the list's way.
    let oldest = app.graphql(LIST, json!({ "first": 3, "order": "OLDEST_FIRST" })).await;
    assert_eq!(ids(&oldest), placed[..3].to_vec(), "{oldest}");
    assert_eq!(oldest["data"]["orders"]["totalCount"], 4, "every page's orders: {oldest}");
    let cursor = oldest["data"]["orders"]["edges"][2]["cursor"].clone();
    let rest = app.graphql(LIST, json!({ "first": 3, "after": cursor, "order": "OLDEST_FIRST" })).await;
    assert_eq!(ids(&rest), placed[3..].to_vec(), "{rest}");
    assert_eq!(rest["data"]["orders"]["pageInfo"]["hasNextPage"], false);
    let newest = app.graphql(LIST, json!({ "first": 10 })).await;
    assert_eq!(ids(&newest), placed.iter().rev().cloned().collect::<Vec<_>>(), "{newest}");

    // Any of several statuses, counted the same way.
    let statuses = app.graphql(LIST, json!({ "statuses": ["CANCELLED", "SHIPPED"] })).await;
    assert_eq!(ids(&statuses), vec![placed[1].clone()], "{statuses}");
    assert_eq!(statuses["data"]["orders"]["totalCount"], 1);
    let confirmed = app.graphql(LIST, json!({ "statuses": ["CONFIRMED"], "order": "OLDEST_FIRST" })).await;
    let expected = vec![placed[0].clone(), placed[2].clone(), placed[3].clone()];
    assert_eq!(ids(&confirmed), expected, "{confirmed}");

    // placedAt ranges: from is inclusive, before exclusive.
    let range = json!({ "from": placed_at[1], "before": placed_at[3], "order": "OLDEST_FIRST" });
    let between = app.graphql(LIST, range).await;
    assert_eq!(ids(&between), placed[1..3].to_vec(), "{between}");
    assert_eq!(between["data"]["orders"]["totalCount"], 2);

    // Both status arguments at once is a coded error.
    let both = app.graphql("{ orders(status: CONFIRMED, statuses: [SHIPPED]) { totalCount } }", json!({})).await;
    assert_eq!(both["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{both}");
}

async fn an_order_the_catalog_never_priced_has_no_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let order = app.place_order(&customer, json!([{ "sku": "no-such-sku", "quantity": 1 }]), None).await;
    let id = order["orderId"].as_str().expect("an order id").to_string();
    let rejected = app.wait_for_order(&id, "rejected", |order| order["status"] == "REJECTED").await;
    assert_eq!(rejected["totalCents"], Value::Null, "not zero: {rejected}");
    assert_eq!(rejected["items"][0]["unitPriceCents"], Value::Null, "{rejected}");
    // Priced orders have their total.
    let priced = app.place_order(&customer, items(), None).await;
    let id = priced["orderId"].as_str().expect("an order id").to_string();
    let confirmed = app.wait_for_order(&id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    assert_eq!(confirmed["totalCents"], 2 * 1250 + 300, "{confirmed}");
}
