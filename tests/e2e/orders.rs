//! The order path: place, query, cancel, subscribe, idempotency,
//! concurrency, rejections and input errors.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, customer, is_final, items};

crate::on_both_backends!(
    a_placed_order_is_queryable_with_its_lines_and_total,
    a_subscriber_sees_the_order_and_then_its_cancellation,
    the_same_idempotency_key_twice_places_one_order_with_one_event,
    twenty_concurrent_cancels_record_exactly_one_cancellation,
    each_rejection_has_its_code_and_appends_nothing,
    invalid_input_is_a_graphql_error_with_a_code_and_appends_nothing,
    orders_are_listed_newest_first_with_cursors_and_filters,
    a_pending_command_can_be_looked_up_by_id,
    a_redelivered_command_gets_its_stored_outcome_and_appends_nothing,
);

async fn a_placed_order_is_queryable_with_its_lines_and_total(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;

    let placed = app.place_order(&customer, items(), None).await;
    assert_eq!(placed["status"], "ACCEPTED", "{placed}");
    assert_eq!(placed["error"], Value::Null);
    let order_id = placed["orderId"].as_str().expect("an order id");

    let order = app.wait_for_order(order_id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    assert_eq!(order["customerId"], customer.as_str());
    assert_eq!(order["totalCents"], 2 * 1250 + 300);
    assert_eq!(order["version"], 2, "placed, then confirmed");
    assert_eq!(order["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(order["items"][0], json!({ "sku": "book-1", "quantity": 2, "unitPriceCents": 1250 }));
    assert_eq!(app.count_events("order", order_id, "OrderPlaced").await, 1);
}

async fn a_subscriber_sees_the_order_and_then_its_cancellation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id").to_string();

    let mut subscription = app
        .subscribe(
            "subscription($id: ID!) { orderUpdated(id: $id) { id status version cancelReason paymentStatus } }",
            json!({ "id": order_id }),
        )
        .await;
    let first = subscription.next_data().await;
    assert_eq!(first["orderUpdated"]["id"], order_id.as_str());
    // The saga may have confirmed it before the subscription's first read.
    if first["orderUpdated"]["status"] != "CONFIRMED" {
        subscription.next_data_until("CONFIRMED", |data| data["orderUpdated"]["status"] == "CONFIRMED").await;
    }

    let cancelled = app.cancel_order(&order_id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let update = subscription.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    assert_eq!(update["orderUpdated"]["version"], 3);
    assert_eq!(update["orderUpdated"]["cancelReason"], "changed my mind");
    // The refund may already be in the row the cancellation's change read.
    if update["orderUpdated"]["paymentStatus"] != "REFUNDED" {
        subscription.next_data_until("the refund", |data| data["orderUpdated"]["paymentStatus"] == "REFUNDED").await;
    }
}

async fn the_same_idempotency_key_twice_places_one_order_with_one_event(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;

    let first = app.place_order(&customer, items(), Some("checkout-42")).await;
    let second = app.place_order(&customer, items(), Some("checkout-42")).await;
    assert_eq!(first["status"], "ACCEPTED", "{first}");
    assert_eq!(first, second, "a retry gets the same outcome");
    let order_id = first["orderId"].as_str().expect("an order id");
    assert_eq!(app.count_events("order", order_id, "OrderPlaced").await, 1);
    app.wait_for_order(order_id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    let third = app.place_order(&customer, items(), Some("checkout-42")).await;
    assert_eq!(first, third, "also long after the first attempt was decided");

    let cancel = app.cancel_order(order_id, "duplicate click", Some("cancel-1")).await;
    let again = app.cancel_order(order_id, "duplicate click", Some("cancel-1")).await;
    assert_eq!(cancel["status"], "ACCEPTED", "{cancel}");
    assert_eq!(cancel, again);
    assert_eq!(app.count_events("order", order_id, "OrderPlaced").await, 1);
    assert_eq!(app.count_events("order", order_id, "OrderCancelled").await, 1);
    let orders = app.graphql("{ orders(first: 10) { edges { node { id } } } }", json!({})).await;
    assert_eq!(orders["data"]["orders"]["edges"].as_array().map(Vec::len), Some(1), "one order: {orders}");

    // The same key for a different request is refused, at once and after the
    // first was decided; the first request stands and nothing is appended.
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let other = json!([{ "sku": "pen-9", "quantity": 5 }]);
    let reused = app
        .graphql(place, json!({ "input": { "customerId": customer, "items": other, "idempotencyKey": "checkout-42" } }))
        .await;
    assert_eq!(reused["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED", "{reused}");
    let fresh = app.place_order(&customer, items(), Some("checkout-43")).await;
    let fresh_id = fresh["orderId"].as_str().expect("an order id");
    let reused_at_once = app
        .graphql(place, json!({ "input": { "customerId": customer, "items": other, "idempotencyKey": "checkout-43" } }))
        .await;
    assert_eq!(reused_at_once["errors"][0]["extensions"]["code"], "IDEMPOTENCY_KEY_REUSED", "{reused_at_once}");
    let reason = app.cancel_order(order_id, "another reason", Some("cancel-1")).await;
    assert_eq!(reason, Value::Null, "a cancellation with another reason under the same key is refused");
    assert_eq!(app.count_events("order", order_id, "OrderPlaced").await, 1);
    assert_eq!(app.count_events("order", order_id, "OrderCancelled").await, 1);
    assert_eq!(app.count_events("order", fresh_id, "OrderPlaced").await, 1);
    let fresh_view = app.wait_for_order(fresh_id, "settled", is_final).await;
    assert_eq!(fresh_view["items"].as_array().map(Vec::len), Some(2), "the first request stands: {fresh_view}");
}

async fn twenty_concurrent_cancels_record_exactly_one_cancellation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
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
    assert_eq!(app.count_events("order", order_id, "OrderCancelled").await, 1);
    app.wait_for_order(order_id, "cancelled", |order| order["status"] == "CANCELLED").await;
}

async fn each_rejection_has_its_code_and_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let before = app.store.count_all_events().await.expect("count");

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = app.cancel_order(&unknown, "why not", None).await;
    assert_eq!(missing["status"], "REJECTED", "{missing}");
    assert_eq!(missing["error"]["code"], "ORDER_NOT_FOUND");
    let ship = app
        .graphql(
            "mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status error { code } } }",
            json!({ "id": unknown }),
        )
        .await;
    assert_eq!(ship["data"]["shipOrder"]["error"]["code"], "ORDER_NOT_FOUND", "{ship}");
    assert_eq!(app.store.count_all_events().await.expect("count"), before, "a rejection appends nothing");

    let placed = app.place_order(&customer, items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id");
    app.wait_for_order(order_id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    assert_eq!(app.cancel_order(order_id, "first", None).await["status"], "ACCEPTED");
    let twice = app.cancel_order(order_id, "second", None).await;
    assert_eq!(twice["status"], "REJECTED");
    assert_eq!(twice["error"]["code"], "ORDER_ALREADY_CANCELLED");
    assert!(twice["error"]["message"].as_str().is_some_and(|message| !message.is_empty()));
    assert_eq!(app.count_events("order", order_id, "OrderCancelled").await, 1);

    let duplicate = app.register_customer(1).await;
    assert_ne!(duplicate, customer);
    let again = app
        .graphql(
            "mutation { addProduct(input: { sku: \"book-1\", name: \"Again\", priceCents: 1, initialStock: 1 }) { status error { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(again["data"]["addProduct"]["error"]["code"], "PRODUCT_ALREADY_EXISTS", "{again}");
}

async fn invalid_input_is_a_graphql_error_with_a_code_and_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.store.count_all_events().await.expect("count");
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

    let catalog_and_customers = [
        (
            "mutation { addProduct(input: { sku: \"a b\", name: \"x\", priceCents: 1, initialStock: 1 }) { status } }",
            "INVALID_SKU",
        ),
        (
            "mutation { addProduct(input: { sku: \"ok\", name: \"x\", priceCents: -1, initialStock: 1 }) { status } }",
            "INVALID_PRICE",
        ),
        (
            "mutation { addProduct(input: { sku: \"ok\", name: \"\", priceCents: 1, initialStock: 1 }) { status } }",
            "INVALID_NAME",
        ),
        ("mutation { restockProduct(input: { sku: \"ok\", quantity: 0 }) { status } }", "INVALID_QUANTITY"),
        (
            "mutation { registerCustomer(input: { name: \"Ada\", email: \"nope\", creditLimitCents: 1 }) { status } }",
            "INVALID_EMAIL",
        ),
        (
            "mutation { registerCustomer(input: { name: \"Ada\", email: \"a@b.co\", creditLimitCents: -1 }) { status } }",
            "INVALID_CREDIT_LIMIT",
        ),
        ("{ product(sku: \"\") { sku } }", "INVALID_SKU"),
    ];
    for (query, code) in catalog_and_customers {
        let response = app.graphql(query, json!({})).await;
        assert_eq!(response["errors"][0]["extensions"]["code"], code, "{query}: {response}");
    }

    assert_eq!(app.store.count_all_events().await.expect("count"), before, "bad input changes nothing");
}

async fn orders_are_listed_newest_first_with_cursors_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = app.shop().await;
    let bob = app.register_customer(10_000_000).await;
    let mut placed = Vec::new();
    for n in 0..5 {
        let who = if n % 2 == 0 { &alice } else { &bob };
        let order = app.place_order(who, items(), None).await;
        let id = order["orderId"].as_str().expect("an order id").to_string();
        app.wait_for_order(&id, "confirmed", |order| order["status"] == "CONFIRMED").await;
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
    // An unknown customer: accepted as an order, then rejected by the saga.
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
    let order_id = placed["orderId"].as_str().expect("an order id");
    let order = app.wait_for_order(order_id, "final", is_final).await;
    assert_eq!(order["status"], "REJECTED");
    assert_eq!(order["rejectionCode"], "CUSTOMER_NOT_FOUND");
}

/// Beyond JetStream's dedupe window a command is delivered again: the
/// stored outcome answers it, and nothing is appended.
async fn a_redelivered_command_gets_its_stored_outcome_and_appends_nothing(backend: Backend) {
    use schema::order::{OrderCommand, OrderLine, PlaceOrder};
    use schema::{CommandEnvelope, Metadata};

    let app = TestApp::spawn(backend).await;
    let id = uuid::Uuid::now_v7();
    let order_id = uuid::Uuid::now_v7().to_string();
    let command = OrderCommand::PlaceOrder(PlaceOrder {
        customer_id: customer(),
        items: vec![OrderLine { sku: "a".into(), quantity: 1, expected_unit_price_cents: None }],
    });
    let envelope = CommandEnvelope::new(id, "order", order_id.clone(), Metadata::origin(id, "test"), &command);
    let handler = write_side::CommandHandler::new(
        app.store.clone(),
        std::sync::Arc::new(write_side::SimulatedProvider::default()),
    );
    let first = handler.handle(&envelope).await.expect("decided");
    let mut again = envelope.clone();
    again.timestamp = chrono::Utc::now();
    let second = handler.handle(&again).await.expect("decided again");
    assert_eq!(first, second, "the stored outcome, word for word");
    assert_eq!(app.count_events("order", &order_id, "OrderPlaced").await, 1);

    if backend == Backend::Server {
        // Through JetStream too, with a new message id, as after the window.
        let namespace = app.isolation.namespace.clone();
        let client = crate::helpers::nats_client().await;
        let mut outcomes = client.subscribe(format!("{namespace}.outcome.{id}")).await.expect("subscribe");
        let js = async_nats::jetstream::new(client);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        let payload = serde_json::to_vec(&envelope).expect("json");
        js.publish_with_headers(format!("{namespace}.cmd.order.PlaceOrder"), headers, payload.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
        let answer = tokio::time::timeout(crate::helpers::WAIT, futures::StreamExt::next(&mut outcomes))
            .await
            .expect("an outcome in time")
            .expect("a message");
        let third: schema::CommandOutcome = serde_json::from_slice(&answer.payload).expect("an outcome");
        assert_eq!(third, first);
        assert_eq!(app.count_events("order", &order_id, "OrderPlaced").await, 1);
    }
}
