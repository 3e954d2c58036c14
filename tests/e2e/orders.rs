//! The order path: place, query, cancel, subscribe, idempotency,
//! concurrency, rejections and input errors.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, customer, items};

crate::on_both_backends!(
    a_placed_order_is_queryable_with_its_lines_and_total,
    a_subscriber_sees_the_order_and_then_its_cancellation,
    the_same_idempotency_key_twice_places_one_order_with_one_event,
    twenty_concurrent_cancels_record_exactly_one_cancellation,
    each_rejection_has_its_code_and_appends_nothing,
    invalid_input_is_a_graphql_error_with_a_code_and_appends_nothing,
    orders_are_listed_newest_first_with_cursors_and_filters,
    a_pending_command_can_be_looked_up_by_id,
);

async fn a_placed_order_is_queryable_with_its_lines_and_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = customer();

    let placed = app.place_order(&customer, items(), None).await;
    assert_eq!(placed["status"], "ACCEPTED", "{placed}");
    assert_eq!(placed["error"], Value::Null);
    let order_id = placed["orderId"].as_str().expect("an order id");

    let order = app.wait_for_order(order_id, "projected", |order| !order.is_null()).await;
    assert_eq!(order["customerId"], customer.as_str());
    assert_eq!(order["status"], "PLACED");
    assert_eq!(order["totalCents"], 2 * 1250 + 300);
    assert_eq!(order["version"], 1);
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(order["items"][0], json!({ "sku": "book-1", "quantity": 2, "unitPriceCents": 1250 }));
    assert_eq!(app.store.count_events("order", order_id).await.expect("count"), 1);
}

async fn a_subscriber_sees_the_order_and_then_its_cancellation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let placed = app.place_order(&customer(), items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id").to_string();

    let mut subscription = app
        .subscribe(
            "subscription($id: ID!) { orderUpdated(id: $id) { id status version cancelReason } }",
            json!({ "id": order_id }),
        )
        .await;
    let first = subscription.next_data().await;
    assert_eq!(first["orderUpdated"]["id"], order_id.as_str());
    assert_eq!(first["orderUpdated"]["status"], "PLACED");

    let cancelled = app.cancel_order(&order_id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let update = subscription.next_data().await;
    assert_eq!(update["orderUpdated"]["status"], "CANCELLED");
    assert_eq!(update["orderUpdated"]["version"], 2);
    assert_eq!(update["orderUpdated"]["cancelReason"], "changed my mind");
}

async fn the_same_idempotency_key_twice_places_one_order_with_one_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = customer();

    let first = app.place_order(&customer, items(), Some("checkout-42")).await;
    let second = app.place_order(&customer, items(), Some("checkout-42")).await;
    assert_eq!(first["status"], "ACCEPTED", "{first}");
    assert_eq!(first, second, "a retry gets the same outcome");
    let order_id = first["orderId"].as_str().expect("an order id");
    assert_eq!(app.store.count_events("order", order_id).await.expect("count"), 1);

    // Also after the first attempt is long decided, and for cancellation.
    let cancel = app.cancel_order(order_id, "duplicate click", Some("cancel-1")).await;
    let again = app.cancel_order(order_id, "duplicate click", Some("cancel-1")).await;
    assert_eq!(cancel["status"], "ACCEPTED", "{cancel}");
    assert_eq!(cancel, again);
    assert_eq!(app.store.count_events("order", order_id).await.expect("count"), 2);
    assert_eq!(app.store.count_all_events().await.expect("count"), 2);
}

async fn twenty_concurrent_cancels_record_exactly_one_cancellation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let placed = app.place_order(&customer(), items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id");

    let outcomes = join_all((0..20).map(|n| {
        let app = &app;
        async move { app.cancel_order(order_id, &format!("cancel #{n}"), None).await }
    }))
    .await;

    let accepted = outcomes.iter().filter(|outcome| outcome["status"] == "ACCEPTED").count();
    let already = outcomes.iter().filter(|outcome| outcome["error"]["code"] == "ORDER_ALREADY_CANCELLED").count();
    assert_eq!(accepted, 1, "{outcomes:#?}");
    assert_eq!(already, 19, "{outcomes:#?}");
    assert_eq!(app.store.count_events("order", order_id).await.expect("count"), 2);
    let order = app.wait_for_order(order_id, "cancelled", |order| order["status"] == "CANCELLED").await;
    assert_eq!(order["version"], 2);
}

async fn each_rejection_has_its_code_and_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = app.cancel_order(&unknown, "why not", None).await;
    assert_eq!(missing["status"], "REJECTED", "{missing}");
    assert_eq!(missing["error"]["code"], "ORDER_NOT_FOUND");
    assert_eq!(app.store.count_all_events().await.expect("count"), 0);

    let placed = app.place_order(&customer(), items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id");
    assert_eq!(app.cancel_order(order_id, "first", None).await["status"], "ACCEPTED");
    let twice = app.cancel_order(order_id, "second", None).await;
    assert_eq!(twice["status"], "REJECTED");
    assert_eq!(twice["error"]["code"], "ORDER_ALREADY_CANCELLED");
    assert!(twice["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
    assert_eq!(app.store.count_all_events().await.expect("count"), 2);
}

async fn invalid_input_is_a_graphql_error_with_a_code_and_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status } }";
    let line =
        |sku: &str, quantity: i64, price: i64| json!({ "sku": sku, "quantity": quantity, "unitPriceCents": price });
    let cases = [
        ("no items", json!({ "customerId": customer(), "items": [] }), "INVALID_ITEM_COUNT"),
        ("101 lines", json!({ "customerId": customer(), "items": vec![line("a", 1, 1); 101] }), "INVALID_ITEM_COUNT"),
        ("quantity 0", json!({ "customerId": customer(), "items": [line("a", 0, 1)] }), "INVALID_QUANTITY"),
        ("quantity 1001", json!({ "customerId": customer(), "items": [line("a", 1001, 1)] }), "INVALID_QUANTITY"),
        ("negative price", json!({ "customerId": customer(), "items": [line("a", 1, -1)] }), "INVALID_PRICE"),
        ("empty sku", json!({ "customerId": customer(), "items": [line("", 1, 1)] }), "INVALID_SKU"),
        ("long sku", json!({ "customerId": customer(), "items": [line(&"x".repeat(65), 1, 1)] }), "INVALID_SKU"),
        ("malformed customer id", json!({ "customerId": "c-1", "items": [line("a", 1, 1)] }), "INVALID_ID"),
        (
            "wrong type",
            json!({ "customerId": customer(), "items": [line("a", 1, 1)], "extra": 1 }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ];
    for (case, input, code) in cases {
        let response = app.graphql(place, json!({ "input": input })).await;
        assert_eq!(response["errors"][0]["extensions"]["code"], code, "{case}: {response}");
        assert!(response["data"].is_null() || response["data"]["placeOrder"].is_null(), "{case}: {response}");
    }

    let cancel = app
        .graphql("mutation { cancelOrder(input: { orderId: \"not-a-uuid\", reason: \"x\" }) { status } }", json!({}))
        .await;
    assert_eq!(cancel["errors"][0]["extensions"]["code"], "INVALID_ID", "{cancel}");
    let query = app.graphql("{ order(id: \"42\") { id } }", json!({})).await;
    assert_eq!(query["errors"][0]["extensions"]["code"], "INVALID_ID", "{query}");
    let unparsable = app.graphql("{ order(id: ", json!({})).await;
    assert_eq!(unparsable["errors"][0]["extensions"]["code"], "GRAPHQL_PARSE_FAILED", "{unparsable}");

    assert_eq!(app.store.count_all_events().await.expect("count"), 0, "bad input changes nothing");
}

async fn orders_are_listed_newest_first_with_cursors_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = customer();
    let bob = customer();
    let mut placed = Vec::new();
    for n in 0..5 {
        let who = if n % 2 == 0 { &alice } else { &bob };
        let order = app.place_order(who, items(), None).await;
        let id = order["orderId"].as_str().expect("an order id").to_string();
        app.wait_for_order(&id, "projected", |order| !order.is_null()).await;
        placed.push(id);
    }
    app.cancel_order(&placed[0], "test", None).await;
    app.wait_for_order(&placed[0], "cancelled", |order| order["status"] == "CANCELLED").await;

    let page = |first: i64, filter: &str| {
        format!(
            "query($after: String) {{ orders(first: {first}, after: $after{filter}) {{ edges {{ cursor node {{ id }} }} pageInfo {{ hasNextPage }} }} }}"
        )
    };
    let ids = |response: &Value| -> Vec<String> {
        response["data"]["orders"]["edges"]
            .as_array()
            .map(|edges| edges.iter().filter_map(|edge| edge["node"]["id"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let newest_first: Vec<String> = placed.iter().rev().cloned().collect();

    let first_page = app.graphql(&page(3, ""), json!({})).await;
    assert_eq!(ids(&first_page), newest_first[..3].to_vec(), "{first_page}");
    assert_eq!(first_page["data"]["orders"]["pageInfo"]["hasNextPage"], true);
    let cursor = first_page["data"]["orders"]["edges"][2]["cursor"].clone();
    let second_page = app.graphql(&page(3, ""), json!({ "after": cursor })).await;
    assert_eq!(ids(&second_page), newest_first[3..].to_vec(), "{second_page}");
    assert_eq!(second_page["data"]["orders"]["pageInfo"]["hasNextPage"], false);

    let alices = app.graphql(&page(10, &format!(", customerId: \"{alice}\"")), json!({})).await;
    assert_eq!(ids(&alices), vec![placed[4].clone(), placed[2].clone(), placed[0].clone()]);
    let cancelled = app.graphql(&page(10, ", status: CANCELLED"), json!({})).await;
    assert_eq!(ids(&cancelled), vec![placed[0].clone()]);

    let too_many = app.graphql(&page(101, ""), json!({})).await;
    assert_eq!(too_many["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{too_many}");
    let bad_cursor = app.graphql(&page(1, ""), json!({ "after": "bogus!" })).await;
    assert_eq!(bad_cursor["errors"][0]["extensions"]["code"], "INVALID_INPUT", "{bad_cursor}");
}

async fn a_pending_command_can_be_looked_up_by_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let placed = app.place_order(&customer(), items(), Some("lookup")).await;
    let command_id = placed["commandId"].as_str().expect("a command id");
    let response = app
        .graphql(
            "query($id: ID!) { commandOutcome(commandId: $id) { commandId status error { code } } }",
            json!({ "id": command_id }),
        )
        .await;
    assert_eq!(response["data"]["commandOutcome"]["status"], "ACCEPTED", "{response}");
    let unknown = app
        .graphql(
            "query($id: ID!) { commandOutcome(commandId: $id) { status } }",
            json!({ "id": uuid::Uuid::now_v7().to_string() }),
        )
        .await;
    assert_eq!(unknown["data"]["commandOutcome"], Value::Null, "{unknown}");
}
