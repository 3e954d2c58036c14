//! Order and money rules against abuse, on both backends: the order rules
//! hold after lines are merged, money fields have upper bounds, and credit
//! is checked before any stock is held.

use schema::ports::EventLog;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp};

crate::on_both_backends!(
    the_order_rules_hold_after_lines_of_one_sku_are_merged,
    prices_and_credit_limits_have_upper_bounds,
    an_order_the_customer_cannot_pay_holds_no_stock,
    a_lifetime_spend_at_the_end_of_the_range_saturates_and_the_view_goes_on,
);

const PLACE: &str =
    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId error { code } } }";

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

async fn the_order_rules_hold_after_lines_of_one_sku_are_merged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let place = |items: Value| {
        let (app, customer) = (&app, customer.clone());
        async move { app.graphql(PLACE, json!({ "input": { "customerId": customer, "items": items } })).await }
    };
    // 600 + 401 books are 1001 of one sku, though each line is within 1000.
    let split = json!([{ "sku": "book-1", "quantity": 600 }, { "sku": "book-1", "quantity": 401 }]);
    let answer = place(split).await;
    assert_eq!(code(&answer), "INVALID_QUANTITY", "{answer}");
    // A hundred lines of a thousand units of one sku: a hundred thousand units.
    let many = json!((0..100).map(|_| json!({ "sku": "pen-9", "quantity": 1000 })).collect::<Vec<_>>());
    let answer = place(many).await;
    assert_eq!(code(&answer), "INVALID_QUANTITY", "{answer}");
    // An order worth more than one order may be, at the prices it expects.
    let costly = json!([{ "sku": "book-1", "quantity": 1000, "unitPriceCents": 1_000_000_000 }, { "sku": "pen-9", "quantity": 11, "unitPriceCents": 1_000_000_000 }]);
    let answer = place(costly).await;
    assert_eq!(code(&answer), "ORDER_TOO_LARGE", "{answer}");
    assert_eq!(app.count_events("product", "book-1", "StockReserved").await, 0, "nothing was sent");
    // Within the rules after merging: placed, as one reservation of 1000.
    let answer = place(json!([{ "sku": "book-1", "quantity": 600 }, { "sku": "book-1", "quantity": 400 }])).await;
    assert_eq!(answer["data"]["placeOrder"]["status"], "ACCEPTED", "{answer}");
}

async fn prices_and_credit_limits_have_upper_bounds(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let add = "mutation($price: Int!) { addProduct(input: { sku: \"gold\", name: \"Gold\", priceCents: $price, initialStock: 1 }) { status } }";
    let answer = app.graphql(add, json!({ "price": 1_000_000_001_i64 })).await;
    assert_eq!(code(&answer), "INVALID_PRICE", "{answer}");
    let register = "mutation($limit: Int!) { registerCustomer(input: { name: \"Rich\", email: \"rich@example.com\", creditLimitCents: $limit }) { status } }";
    let answer = app.graphql(register, json!({ "limit": 10_000_000_001_i64 })).await;
    assert_eq!(code(&answer), "INVALID_CREDIT_LIMIT", "{answer}");
    let answer = app.graphql(register, json!({ "limit": i64::MAX })).await;
    assert_eq!(code(&answer), "INVALID_CREDIT_LIMIT", "{answer}");
    // A client's expected price above the bound is refused too.
    let customer = app.shop().await;
    let items = json!([{ "sku": "book-1", "quantity": 1, "unitPriceCents": i64::MAX }]);
    let answer = app.graphql(PLACE, json!({ "input": { "customerId": customer, "items": items } })).await;
    assert_eq!(code(&answer), "INVALID_PRICE", "{answer}");
    // At the bounds: accepted.
    let answer = app.graphql(add, json!({ "price": 1_000_000_000_i64 })).await;
    assert_eq!(answer["data"]["addProduct"]["status"], "ACCEPTED", "{answer}");
    let answer = app.graphql(register, json!({ "limit": 10_000_000_000_i64 })).await;
    assert_eq!(answer["data"]["registerCustomer"]["status"], "ACCEPTED", "{answer}");
    let restock =
        "mutation { restockProduct(input: { sku: \"gold\", quantity: 1000000000 }) { status error { code } } }";
    let answer = app.graphql(restock, json!({})).await;
    assert_eq!(answer["data"]["restockProduct"]["error"]["code"], "INVALID_QUANTITY", "the shelf's cap: {answer}");
}

async fn an_order_the_customer_cannot_pay_holds_no_stock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 1).await;
    let broke = app.register_customer(0).await;
    let modest = app.register_customer(5000).await;
    let place = |customer: &str, items: Value| {
        let (app, customer) = (&app, customer.to_string());
        async move {
            let answer = app.graphql(PLACE, json!({ "input": { "customerId": customer, "items": items } })).await;
            answer["data"]["placeOrder"]["orderId"].as_str().expect("placed").to_string()
        }
    };
    // No credit at all, no price named: the catalog price decides, before the stock is held.
    let unpriced = place(&broke, json!([{ "sku": "lamp", "quantity": 1 }])).await;
    // A price the client expects above its limit: declined before anything is reserved.
    let priced = place(&modest, json!([{ "sku": "lamp", "quantity": 2, "unitPriceCents": 4500 }])).await;
    for order in [&unpriced, &priced] {
        let settled = app.wait_for_order(order, "rejected", |order| order["status"] == "REJECTED").await;
        assert_eq!(settled["rejectionCode"], "CREDIT_LIMIT_EXCEEDED", "{settled}");
        assert_eq!(settled["stockStatus"], "NONE", "{settled}");
        let payments = app.store.read_stream("payment", order, 1, u64::MAX).await.expect("payment stream");
        assert!(payments.is_empty(), "no payment was asked for: {payments:?}");
    }
    assert_eq!(app.count_events("product", "lamp", "StockReserved").await, 0, "the lamp was never held");
    // So the one lamp is still there for a customer who can pay for it.
    let paying = place(&modest, json!([{ "sku": "lamp", "quantity": 1 }])).await;
    app.wait_for_order(&paying, "confirmed", |order| order["status"] == "CONFIRMED").await;

    // Lines that each fit the limit but together do not: once the saga has
    // seen the catalog's prices (catalog prices never change), the order is
    // declined before its stock is held, named prices or not.
    app.add_product("bulb", 1000, 10).await;
    let bulb = place(&modest, json!([{ "sku": "bulb", "quantity": 1 }])).await;
    app.wait_for_order(&bulb, "confirmed", |order| order["status"] == "CONFIRMED").await;
    let restock =
        "mutation { restockProduct(input: { sku: \"lamp\", quantity: 1, consistency: AWAIT_VIEW }) { status } }";
    assert_eq!(app.graphql(restock, json!({})).await["data"]["restockProduct"]["status"], "ACCEPTED");
    let together = place(&modest, json!([{ "sku": "lamp", "quantity": 1 }, { "sku": "bulb", "quantity": 1 }])).await;
    let settled = app.wait_for_order(&together, "rejected", |order| order["status"] == "REJECTED").await;
    assert_eq!(settled["rejectionCode"], "CREDIT_LIMIT_EXCEEDED", "{settled}");
    assert_eq!(settled["stockStatus"], "NONE", "nothing was held: {settled}");
}

async fn a_lifetime_spend_at_the_end_of_the_range_saturates_and_the_view_goes_on(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    app.wait_for_customer(&customer, |view| !view.is_null()).await;
    // No rule lets a customer get here; a view must not break if one does.
    let (_, views) = app.isolation.pools().await;
    sqlx::query("UPDATE customers SET lifetime_spend_cents = $1 WHERE customer_id = $2")
        .bind(i64::MAX - 100)
        .bind(&customer)
        .execute(&views)
        .await
        .expect("set the spend");
    let first = app.place_order(&customer, crate::helpers::items(), None).await;
    let id = first["orderId"].as_str().expect("placed");
    app.wait_for_order(id, "confirmed", |order| order["status"] == "CONFIRMED").await;
    let saturated = app.wait_for_customer(&customer, |view| view["lifetimeSpendCents"] == json!(i64::MAX)).await;
    assert_eq!(saturated["orderCount"], 1, "{saturated}");
    // The projector did not get stuck on it: the next order is counted.
    app.place_order(&customer, crate::helpers::items(), None).await;
    app.wait_for_customer(&customer, |view| view["orderCount"] == 2).await;
}
