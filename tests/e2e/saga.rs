//! The business transaction across services: order → stock → payment →
//! confirmed, or compensated; on both backends.

use std::collections::HashMap;

use futures::future::join_all;
use schema::envelope::Message;
use schema::payment::PaymentEvent;
use schema::ports::EventLog;
use schema::product::ProductEvent;
use serde_json::{Value, json};

use conveyor::config::Domain;

use crate::helpers::{Backend, Isolation, TestApp, customer, is_final};

crate::on_both_backends!(
    an_order_is_confirmed_with_catalog_prices_reserved_stock_and_an_authorized_payment,
    a_declined_payment_releases_the_stock,
    an_out_of_stock_order_is_rejected_and_never_charged,
    unknown_customers_skus_and_changed_prices_reject_the_order,
    cancelling_a_confirmed_order_refunds_and_releases,
    shipping_captures_the_payment_and_takes_the_stock,
    a_hundred_concurrent_orders_for_ten_units_confirm_exactly_ten,
    a_step_without_an_answer_is_compensated_after_the_saga_timeout,
    fifty_orders_with_customers_products_and_timelines_take_a_constant_number_of_statements,
    a_flaky_payment_provider_is_retried_until_every_order_confirms_once,
    mutations_that_await_the_view_return_it_with_their_change,
);

fn line(sku: &str, quantity: i64) -> Value {
    json!({ "sku": sku, "quantity": quantity })
}

async fn place_and_settle(app: &TestApp, customer: &str, items: Value) -> Value {
    let placed = app.place_order(customer, items, None).await;
    assert_eq!(placed["status"], "ACCEPTED", "{placed}");
    let id = placed["orderId"].as_str().expect("order id").to_string();
    app.wait_for_order(&id, "final", is_final).await
}

async fn an_order_is_confirmed_with_catalog_prices_reserved_stock_and_an_authorized_payment(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 10).await;
    app.add_product("bulb", 250, 100).await;
    let customer = app.register_customer(100_000).await;

    let order = place_and_settle(&app, &customer, json!([line("lamp", 1), line("bulb", 4)])).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    // Steps' events are projected apart from the order's (other streams).
    let id = order["id"].as_str().expect("id");
    let order = app.wait_for_order(id, "paid and reserved", |order| order["stockStatus"] == "RESERVED").await;
    assert_eq!(order["paymentStatus"], "AUTHORIZED");
    assert_eq!(order["stockStatus"], "RESERVED");
    assert_eq!(order["totalCents"], 4500 + 4 * 250, "prices come from the catalog");
    assert_eq!(order["items"][1]["unitPriceCents"], 250);

    // Views are projected apart: wait for the products and customers views too.
    let lamp = app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 1).await;
    assert_eq!((lamp["onHand"].clone(), lamp["available"].clone()), (json!(10), json!(9)));
    app.wait_for_customer(&customer, |customer| customer["lifetimeSpendCents"] == 5500).await;

    let id = order["id"].as_str().expect("id");
    let details = app
        .graphql(
            "query($id: ID!) { order(id: $id) { timeline { type aggregateType actor causationId }
               customer { orderCount lifetimeSpendCents openOrders orders(first: 5) { edges { node { id } } } } } }",
            json!({ "id": id }),
        )
        .await;
    let timeline = details["data"]["order"]["timeline"].as_array().expect("a timeline").clone();
    let types: Vec<&str> = timeline.iter().filter_map(|entry| entry["type"].as_str()).collect();
    assert_eq!(types.first(), Some(&"OrderPlaced"), "{timeline:?}");
    assert_eq!(types.last(), Some(&"OrderConfirmed"), "{timeline:?}");
    for expected in ["StockReserved", "PaymentAuthorized"] {
        assert!(types.contains(&expected), "{expected} in {types:?}");
    }
    assert!(timeline.iter().skip(1).all(|entry| entry["actor"] == "saga:order-fulfillment"));
    let customer_view = &details["data"]["order"]["customer"];
    assert_eq!(customer_view["orderCount"], 1);
    assert_eq!(customer_view["lifetimeSpendCents"], 5500);
    assert_eq!(customer_view["openOrders"], 1);
    assert_eq!(customer_view["orders"]["edges"][0]["node"]["id"], id);
}

async fn a_declined_payment_releases_the_stock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 10).await;
    app.add_product("bulb", 1000, 10).await;
    let customer = app.register_customer(5000).await;

    // Each line is within the limit (so its stock is held); together they are not.
    let order = place_and_settle(&app, &customer, json!([line("lamp", 1), line("bulb", 1)])).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert_eq!(order["rejectionCode"], "PAYMENT_DECLINED");
    assert_eq!(order["paymentStatus"], "DECLINED");
    let id = order["id"].as_str().expect("id");
    let order = app.wait_for_order(id, "released", |order| order["stockStatus"] == "RELEASED").await;
    assert!(order["rejectionReason"].as_str().is_some_and(|reason| !reason.is_empty()));
    let lamp = app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 0).await;
    assert_eq!(lamp["available"], 10, "the reservation was released: {lamp}");
}

async fn an_out_of_stock_order_is_rejected_and_never_charged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 1).await;
    app.add_product("bulb", 250, 100).await;
    let customer = app.register_customer(100_000).await;

    let order = place_and_settle(&app, &customer, json!([line("bulb", 3), line("lamp", 2)])).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert_eq!(order["rejectionCode"], "OUT_OF_STOCK");
    let id = order["id"].as_str().expect("id");
    app.wait_for_order(id, "released", |order| order["stockStatus"] == "RELEASED").await;
    let payments = app.store.read_stream("payment", id, 1, u64::MAX).await.expect("payment stream");
    assert!(payments.is_empty(), "no payment was attempted: {payments:?}");
    let bulb = app.wait_for_product_sku("bulb", |bulb| bulb["reserved"] == 0).await;
    assert_eq!(bulb["available"], 100, "the bulbs reserved first went back");
    assert_eq!(app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 0).await["available"], 1);
}

async fn unknown_customers_skus_and_changed_prices_reject_the_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 10).await;
    let registered = app.register_customer(100_000).await;

    let cases = [
        (customer(), json!([line("lamp", 1)]), "CUSTOMER_NOT_FOUND"),
        (registered.clone(), json!([line("no-such-sku", 1)]), "UNKNOWN_SKU"),
        (registered.clone(), json!([{ "sku": "lamp", "quantity": 1, "unitPriceCents": 3999 }]), "PRICE_MISMATCH"),
    ];
    for (who, items, code) in cases {
        let order = place_and_settle(&app, &who, items).await;
        assert_eq!(order["status"], "REJECTED", "{code}: {order}");
        assert_eq!(order["rejectionCode"], code, "{order}");
        let payments = app.store.read_stream("payment", order["id"].as_str().expect("id"), 1, u64::MAX).await;
        assert!(payments.expect("payment stream").is_empty(), "{code}: no payment attempted");
    }
    let lamp = app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 0).await;
    assert_eq!(lamp["available"], 10);
}

async fn cancelling_a_confirmed_order_refunds_and_releases(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 10).await;
    let customer = app.register_customer(100_000).await;
    let order = place_and_settle(&app, &customer, json!([line("lamp", 3)])).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    let id = order["id"].as_str().expect("id");

    assert_eq!(app.cancel_order(id, "too expensive", None).await["status"], "ACCEPTED");
    let order = app
        .wait_for_order(id, "refunded and released", |order| {
            order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
        })
        .await;
    assert_eq!(order["status"], "CANCELLED");
    assert_eq!(app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 0).await["available"], 10);
    let refunds = app.count_events("payment", id, "PaymentRefunded").await;
    assert_eq!(refunds, 1);
    // The customers view is projected apart: wait for the order to be in it
    // (no open orders also holds before its OrderPlaced is applied there).
    let customer_view =
        app.wait_for_customer(&customer, |customer| customer["openOrders"] == 0 && customer["orderCount"] == 1).await;
    assert_eq!(
        (customer_view["lifetimeSpendCents"].clone(), customer_view["orderCount"].clone()),
        (json!(0), json!(1))
    );
}

async fn shipping_captures_the_payment_and_takes_the_stock(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("lamp", 4500, 10).await;
    let customer = app.register_customer(100_000).await;
    let order = place_and_settle(&app, &customer, json!([line("lamp", 2)])).await;
    let id = order["id"].as_str().expect("id");
    let ship = "mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status error { code } } }";
    let shipped = app.graphql(ship, json!({ "id": id })).await;
    assert_eq!(shipped["data"]["shipOrder"]["status"], "ACCEPTED", "{shipped}");
    let order = app
        .wait_for_order(id, "captured and committed", |order| {
            order["paymentStatus"] == "CAPTURED" && order["stockStatus"] == "COMMITTED"
        })
        .await;
    assert_eq!(order["status"], "SHIPPED");
    let lamp = app.wait_for_product_sku("lamp", |lamp| lamp["onHand"] == 8).await;
    assert_eq!((lamp["reserved"].clone(), lamp["available"].clone()), (json!(0), json!(8)));
    let again = app.graphql(ship, json!({ "id": id })).await;
    assert_eq!(again["data"]["shipOrder"]["error"]["code"], "ORDER_ALREADY_SHIPPED");
    let cancel = app.cancel_order(id, "too late", None).await;
    assert_eq!(cancel["error"]["code"], "ORDER_ALREADY_SHIPPED");
}

async fn a_hundred_concurrent_orders_for_ten_units_confirm_exactly_ten(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.add_product("scarce", 1000, 10).await;
    let customer = app.register_customer(1_000_000).await;

    let placed = join_all((0..100).map(|_| app.place_order(&customer, json!([line("scarce", 1)]), None))).await;
    let ids: Vec<String> = placed
        .iter()
        .map(|placed| {
            assert_eq!(placed["status"], "ACCEPTED", "{placed}");
            placed["orderId"].as_str().expect("order id").to_string()
        })
        .collect();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let order = app.wait_for_order(id, "final", is_final).await;
        let key =
            format!("{} {}", order["status"].as_str().unwrap_or("?"), order["rejectionCode"].as_str().unwrap_or(""));
        *statuses.entry(key).or_default() += 1;
    }
    assert_eq!(statuses.get("CONFIRMED "), Some(&10), "{statuses:?}");
    assert_eq!(statuses.get("REJECTED OUT_OF_STOCK"), Some(&90), "{statuses:?}");

    let scarce = app.wait_for_product_sku("scarce", |product| product["reserved"] == 10).await;
    assert_eq!(scarce["available"], 0);
    // Every version of the stock, as the event store holds it, kept available >= 0;
    // the products view's CHECK constraint held the same for every projected version.
    let events = app.store.read_stream("product", "scarce", 1, u64::MAX).await.expect("product stream");
    let (mut on_hand, mut reserved) = (0i64, 0i64);
    let mut reserved_for: HashMap<String, usize> = HashMap::new();
    for event in &events {
        match ProductEvent::decode(event).expect("a product event") {
            ProductEvent::ProductAdded(added) => on_hand = added.initial_stock,
            ProductEvent::StockReserved(r) => {
                reserved += i64::from(r.quantity);
                *reserved_for.entry(r.order_id).or_default() += 1;
            }
            ProductEvent::StockReleased(r) => reserved -= i64::from(r.quantity),
            other => panic!("unexpected {other:?}"),
        }
        assert!(on_hand - reserved >= 0, "available went below zero at version {}", event.stream_version);
    }
    assert!(reserved_for.values().all(|count| *count == 1), "no order reserved twice");
}

async fn a_step_without_an_answer_is_compensated_after_the_saga_timeout(backend: Backend) {
    // The provider answers after 20 s; the saga waits 200 ms per step and
    // gives up after 1 s, long before any answer can come.
    let domain = Domain {
        payment_latency: std::time::Duration::from_secs(20),
        saga_step_timeout: std::time::Duration::from_millis(200),
        saga_timeout: std::time::Duration::from_secs(1),
        ..Domain::default()
    };
    let app = TestApp::spawn_with(Isolation::new(backend).await, domain).await;
    app.add_product("lamp", 4500, 10).await;
    let customer = app.register_customer(100_000).await;
    let order = place_and_settle(&app, &customer, json!([line("lamp", 1)])).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert_eq!(order["rejectionCode"], "STEP_TIMED_OUT");
    let id = order["id"].as_str().expect("id");
    app.wait_for_order(id, "released and voided", |order| {
        order["stockStatus"] == "RELEASED" && order["paymentStatus"] == "VOIDED"
    })
    .await;
    assert_eq!(app.wait_for_product_sku("lamp", |lamp| lamp["reserved"] == 0).await["available"], 10);
    // Nothing was authorized (a late authorization after the void holds
    // nothing either: the payment aggregate's tests prove that).
    let payments = app.store.read_stream("payment", id, 1, u64::MAX).await.expect("payment stream");
    let authorized = payments
        .iter()
        .filter(|event| matches!(PaymentEvent::decode(event), Ok(PaymentEvent::PaymentAuthorized(_))))
        .count();
    assert_eq!(authorized, 0, "{payments:?}");
}

async fn fifty_orders_with_customers_products_and_timelines_take_a_constant_number_of_statements(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer_id = app.shop().await;
    let other = app.register_customer(10_000_000).await;
    let items = json!([line("book-1", 1), line("pen-9", 2)]);
    let placed =
        join_all((0..50).map(|n| app.place_order(if n % 2 == 0 { &customer_id } else { &other }, items.clone(), None)))
            .await;
    for placed in &placed {
        app.wait_for_order(placed["orderId"].as_str().expect("id"), "final", is_final).await;
    }
    let query = "query($first: Int!) { orders(first: $first) { edges { node { id
        customer { name email } items { sku product { name available } } timeline { type } } } } }";
    let mut statements = Vec::new();
    for first in [5, 50] {
        let before = app.gateway_views.statements();
        let answer = app.graphql(query, json!({ "first": first })).await;
        let edges = answer["data"]["orders"]["edges"].as_array().map(Vec::len);
        assert_eq!(edges, Some(first), "{answer}");
        assert!(answer["data"]["orders"]["edges"][0]["node"]["customer"]["name"].is_string(), "{answer}");
        statements.push(app.gateway_views.statements() - before);
    }
    assert_eq!(statements[0], statements[1], "5 orders and 50 orders cost the same statements: {statements:?}");
    assert!(statements[1] <= 4, "one for the page, one per batched field: {statements:?}");
}

async fn a_flaky_payment_provider_is_retried_until_every_order_confirms_once(backend: Backend) {
    // Most authorizations fail outright; the saga retries (same command id)
    // until the provider answers, and never authorizes twice. Retries start
    // at 10 ms (a quarter of the delay), so even a run of a dozen failures
    // in a row ends well within the wait.
    let domain = Domain {
        payment_failure_rate: 0.5,
        saga_step_timeout: std::time::Duration::from_millis(500),
        saga_retry_delay: std::time::Duration::from_millis(40),
        ..Domain::default()
    };
    let app = TestApp::spawn_with(Isolation::new(backend).await, domain).await;
    app.add_product("lamp", 4500, 100).await;
    let customer = app.register_customer(1_000_000).await;
    let orders = join_all((0..5).map(|_| place_and_settle(&app, &customer, json!([line("lamp", 1)])))).await;
    for order in &orders {
        assert_eq!(order["status"], "CONFIRMED", "{order}");
        let id = order["id"].as_str().expect("id");
        assert_eq!(app.count_events("payment", id, "PaymentAuthorized").await, 1);
    }
    let restock = app
        .graphql("mutation { restockProduct(input: { sku: \"lamp\", quantity: 7 }) { status sku } }", json!({}))
        .await;
    assert_eq!(restock["data"]["restockProduct"]["status"], "ACCEPTED", "{restock}");
    let lamp = app.wait_for_product_sku("lamp", |lamp| lamp["onHand"] == 107).await;
    assert_eq!(lamp["available"], 102);
}

async fn mutations_that_await_the_view_return_it_with_their_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let add = app
        .graphql(
            "mutation { addProduct(input: { sku: \"lamp\", name: \"Lamp\", priceCents: 4500, initialStock: 3, consistency: AWAIT_VIEW })
               { status product { sku onHand available version } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        add["data"]["addProduct"]["product"],
        json!({ "sku": "lamp", "onHand": 3, "available": 3, "version": 1 }),
        "{add}"
    );
    let restock = app
        .graphql(
            "mutation { restockProduct(input: { sku: \"lamp\", quantity: 2, consistency: AWAIT_VIEW }) { product { onHand version } } }",
            json!({}),
        )
        .await;
    assert_eq!(restock["data"]["restockProduct"]["product"], json!({ "onHand": 5, "version": 2 }), "{restock}");

    let register = app
        .graphql(
            "mutation { registerCustomer(input: { name: \"Ada\", email: \"ada@example.com\", creditLimitCents: 100000, consistency: AWAIT_VIEW })
               { customerId customer { name creditLimitCents } } }",
            json!({}),
        )
        .await;
    let payload = &register["data"]["registerCustomer"];
    assert_eq!(payload["customer"], json!({ "name": "Ada", "creditLimitCents": 100000 }), "{register}");
    let customer = payload["customerId"].as_str().expect("customer id");

    let place = app
        .graphql(
            "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId order { status version } } }",
            json!({ "input": { "customerId": customer, "items": [line("lamp", 1)], "consistency": "AWAIT_VIEW" } }),
        )
        .await;
    let order = &place["data"]["placeOrder"]["order"];
    assert!(order["version"].as_i64().is_some_and(|version| version >= 1), "the placed order is in the view: {place}");
    let id = place["data"]["placeOrder"]["orderId"].as_str().expect("order id");
    app.wait_for_order(id, "confirmed", |order| order["status"] == "CONFIRMED").await;

    let cancel = app
        .graphql(
            "mutation($id: ID!) { cancelOrder(input: { orderId: $id, reason: \"r\", consistency: AWAIT_VIEW }) { status order { status version } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(cancel["data"]["cancelOrder"]["order"], json!({ "status": "CANCELLED", "version": 3 }), "{cancel}");
}
