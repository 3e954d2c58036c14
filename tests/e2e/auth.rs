//! Authentication and access rules, for queries, mutations and
//! subscriptions, on both backends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conveyor::embedded::Embedded;
use conveyor::server::{Infra, Sides, start_gateway};
use gateway::Role;
use gateway::auth::{TokenClaims, issue, issue_with};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, Isolation, Subscription, TestApp, is_final};

crate::on_both_backends!(
    every_access_rule_holds_for_queries_mutations_and_subscriptions,
    tokens_need_the_configured_issuer_and_audience_and_wait_for_their_not_before,
    a_secret_shorter_than_32_bytes_stops_the_start,
);

const SECRET: &str = "a-test-secret-of-32-bytes-length";

fn token(role: Role, subject: &str) -> String {
    issue(SECRET.as_bytes(), role, subject, Duration::from_secs(600)).expect("signs")
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

const PLACE: &str = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";

async fn every_access_rule_holds_for_queries_mutations_and_subscriptions(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        // Another customer's order waits for the view as a missing one does.
        common.mutation_wait = Duration::from_secs(3);
    })
    .await;
    let admin = token(Role::Admin, "ops");
    let service = token(Role::Service, "shipping");

    // Admin writes the catalog and registers customers; nobody else may.
    let add = "mutation { addProduct(input: { sku: \"lamp\", name: \"Lamp\", priceCents: 100, initialStock: 50, consistency: AWAIT_VIEW }) { status } }";
    let (_, anonymous_add) = app.graphql_as(None, add, json!({})).await;
    assert_eq!(code(&anonymous_add), "UNAUTHENTICATED", "{anonymous_add}");
    let (_, service_add) = app.graphql_as(Some(&service), add, json!({})).await;
    assert_eq!(code(&service_add), "FORBIDDEN", "{service_add}");
    let (_, added) = app.graphql_as(Some(&admin), add, json!({})).await;
    assert_eq!(added["data"]["addProduct"]["status"], "ACCEPTED", "{added}");
    let register = "mutation($name: String!, $email: String!) { registerCustomer(input: { name: $name, email: $email, creditLimitCents: 100000, consistency: AWAIT_VIEW }) { customerId } }";
    let mut customers = Vec::new();
    for name in ["Alice", "Bob"] {
        let (_, registered) = app
            .graphql_as(Some(&admin), register, json!({ "name": name, "email": format!("{name}@example.com") }))
            .await;
        customers.push(registered["data"]["registerCustomer"]["customerId"].as_str().expect("id").to_string());
    }
    let (alice, bob) = (&customers[0], &customers[1]);
    let alice_token = token(Role::Customer, alice);
    let bob_token = token(Role::Customer, bob);
    let (_, customer_registers) =
        app.graphql_as(Some(&alice_token), register, json!({ "name": "Eve", "email": "eve@example.com" })).await;
    assert_eq!(code(&customer_registers), "FORBIDDEN", "{customer_registers}");
    let (_, restock) = app
        .graphql_as(
            Some(&alice_token),
            "mutation { restockProduct(input: { sku: \"lamp\", quantity: 1 }) { status } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&restock), "FORBIDDEN", "{restock}");

    // The catalog is public.
    let (status, catalog) = app.graphql_as(None, "{ products(first: 5) { edges { node { sku } } } }", json!({})).await;
    assert_eq!((status, catalog["data"]["products"]["edges"][0]["node"]["sku"].clone()), (200, json!("lamp")));

    // A bad token is refused before anything runs.
    let (status, forged) =
        app.graphql_as(Some("not.a.token"), "{ products(first: 1) { edges { cursor } } }", json!({})).await;
    assert_eq!((status, code(&forged)), (401, "UNAUTHENTICATED"), "{forged}");

    // Customers place orders for themselves only.
    let input =
        |customer: &str| json!({ "input": { "customerId": customer, "items": [{ "sku": "lamp", "quantity": 1 }] } });
    let (_, anonymous_place) = app.graphql_as(None, PLACE, input(alice)).await;
    assert_eq!(code(&anonymous_place), "UNAUTHENTICATED");
    let (_, for_bob) = app.graphql_as(Some(&alice_token), PLACE, input(bob)).await;
    assert_eq!(code(&for_bob), "FORBIDDEN", "{for_bob}");
    let (_, placed) = app.graphql_as(Some(&alice_token), PLACE, input(alice)).await;
    let alice_order = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    let (_, placed) = app.graphql_as(Some(&bob_token), PLACE, input(bob)).await;
    let bob_order = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    for order in [&alice_order, &bob_order] {
        app.wait_for_order_as(&admin, order, is_final).await;
    }

    // Customers read their own orders and themselves only.
    let read = "query($id: ID!) { order(id: $id) { id customer { name } } }";
    let (_, own) = app.graphql_as(Some(&alice_token), read, json!({ "id": alice_order })).await;
    assert_eq!(own["data"]["order"]["customer"]["name"], "Alice", "{own}");
    // Another customer's order is answered as a missing one.
    let (_, others) = app.graphql_as(Some(&alice_token), read, json!({ "id": bob_order })).await;
    let (_, missing) =
        app.graphql_as(Some(&alice_token), read, json!({ "id": "0193a7d0-0000-7000-8000-00000000c0de" })).await;
    assert_eq!((&others, &missing), (&json!({ "data": { "order": null } }), &json!({ "data": { "order": null } })));
    let (_, anonymous_read) = app.graphql_as(None, read, json!({ "id": alice_order })).await;
    assert_eq!(code(&anonymous_read), "UNAUTHENTICATED");
    let list = "query($customer: ID) { orders(first: 10, customerId: $customer) { edges { node { id } } } }";
    let (_, mine) = app.graphql_as(Some(&alice_token), list, json!({})).await;
    assert_eq!(mine["data"]["orders"]["edges"], json!([{ "node": { "id": alice_order } }]), "{mine}");
    let (_, bobs) = app.graphql_as(Some(&alice_token), list, json!({ "customer": bob })).await;
    assert_eq!(code(&bobs), "FORBIDDEN");
    let (_, everything) = app.graphql_as(Some(&service), list, json!({})).await;
    assert_eq!(everything["data"]["orders"]["edges"].as_array().map(Vec::len), Some(2), "{everything}");
    let me = "query($id: ID!) { customer(id: $id) { name } }";
    let (_, myself) = app.graphql_as(Some(&alice_token), me, json!({ "id": alice })).await;
    assert_eq!(myself["data"]["customer"]["name"], "Alice");
    let (_, someone) = app.graphql_as(Some(&alice_token), me, json!({ "id": bob })).await;
    assert_eq!(code(&someone), "FORBIDDEN");

    // Customers cancel their own orders; shipping is for service and admin.
    let cancel = "mutation($id: ID!) { cancelOrder(input: { orderId: $id, reason: \"r\" }) { status error { code } } }";
    let (_, cancel_bobs) = app.graphql_as(Some(&alice_token), cancel, json!({ "id": bob_order })).await;
    assert_eq!(code(&cancel_bobs), "ORDER_NOT_FOUND", "{cancel_bobs}");
    let (_, cancel_unknown) =
        app.graphql_as(Some(&alice_token), cancel, json!({ "id": "0193a7d0-0000-7000-8000-00000000c0de" })).await;
    assert_eq!(code(&cancel_unknown), "ORDER_NOT_FOUND", "{cancel_unknown}");
    // Right after placing, before the view shows the order: the gateway waits for it.
    for _ in 0..5 {
        let (_, placed) = app.graphql_as(Some(&alice_token), PLACE, input(alice)).await;
        let fresh = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
        let (_, at_once) = app.graphql_as(Some(&alice_token), cancel, json!({ "id": fresh })).await;
        assert_eq!(at_once["data"]["cancelOrder"]["status"], "ACCEPTED", "cancel right after placing: {at_once}");
    }
    let ship = "mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status error { code } } }";
    let (_, customer_ships) = app.graphql_as(Some(&bob_token), ship, json!({ "id": bob_order })).await;
    assert_eq!(code(&customer_ships), "FORBIDDEN");
    let (_, shipped) = app.graphql_as(Some(&service), ship, json!({ "id": bob_order })).await;
    assert_eq!(shipped["data"]["shipOrder"]["status"], "ACCEPTED", "{shipped}");

    // Subscriptions: the token travels in connection_init.
    let follow = "subscription($id: ID!) { orderUpdated(id: $id) { id status } }";
    let mut own = Subscription::start_as(app.address, Some(&alice_token), follow, json!({ "id": alice_order })).await;
    assert_eq!(own.next_data().await["orderUpdated"]["id"], alice_order.as_str());
    let (_, cancelled) = app.graphql_as(Some(&alice_token), cancel, json!({ "id": alice_order })).await;
    assert_eq!(cancelled["data"]["cancelOrder"]["status"], "ACCEPTED", "{cancelled}");
    own.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;

    // Another customer's order: as for one that does not exist (yet), nothing comes.
    let (_, placed) = app.graphql_as(Some(&bob_token), PLACE, input(bob)).await;
    let bobs_next = placed["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    let mut others = Subscription::start_as(app.address, Some(&alice_token), follow, json!({ "id": bobs_next })).await;
    let mut bobs = Subscription::start_as(app.address, Some(&bob_token), follow, json!({ "id": bobs_next })).await;
    let (_, cancelled) = app.graphql_as(Some(&bob_token), cancel, json!({ "id": bobs_next })).await;
    assert_eq!(cancelled["data"]["cancelOrder"]["status"], "ACCEPTED", "{cancelled}");
    bobs.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    assert_eq!(others.next_data_within(Duration::from_millis(500)).await, None, "nothing of Bob's reaches Alice");
    let mut anonymous = Subscription::start_as(app.address, None, follow, json!({ "id": alice_order })).await;
    let refused = anonymous.next_payload().await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{refused}");
    assert!(Subscription::connect(app.address, Some("forged")).await.is_err(), "a bad token cannot connect");
}

const ISSUER: &str = "https://id.example.com";
const AUDIENCE: &str = "conveyor";

/// A token with raw claims, as any identity provider might sign it.
fn signed(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("signs")
}

async fn tokens_need_the_configured_issuer_and_audience_and_wait_for_their_not_before(backend: Backend) {
    let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
        common.jwt_secret = Some(SECRET.into());
        common.jwt_issuer = Some(ISSUER.into());
        common.jwt_audience = Some(AUDIENCE.into());
    })
    .await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    let claims = |extra: Value| {
        let mut claims = json!({ "sub": "ops", "role": "admin", "iat": now, "exp": now + 600 });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        claims
    };
    let query = "{ commandOutcome(commandId: \"0193a7d0-0000-7000-8000-00000000c0de\") { status } }";

    // What `conveyor token` issues with the same settings is accepted.
    let wanted = TokenClaims { issuer: Some(ISSUER.into()), audience: Some(AUDIENCE.into()) };
    let issued =
        issue_with(SECRET.as_bytes(), Role::Admin, "ops", SystemTime::now() + Duration::from_secs(600), &wanted)
            .expect("signs");
    let (status, answer) = app.graphql_as(Some(&issued), query, json!({})).await;
    assert_eq!((status, &answer), (200, &json!({ "data": { "commandOutcome": null } })));
    let good = signed(claims(json!({ "iss": ISSUER, "aud": [AUDIENCE, "billing"], "nbf": now - 5 })));
    assert_eq!(app.graphql_as(Some(&good), query, json!({})).await.0, 200, "one of several audiences");

    let refused = [
        (signed(claims(json!({ "aud": AUDIENCE }))), "no issuer"),
        (signed(claims(json!({ "iss": "https://evil.example.com", "aud": AUDIENCE }))), "another issuer"),
        (signed(claims(json!({ "iss": ISSUER }))), "no audience"),
        (signed(claims(json!({ "iss": ISSUER, "aud": "billing" }))), "another audience"),
        (signed(claims(json!({ "iss": ISSUER, "aud": AUDIENCE, "nbf": now + 3600 }))), "a not-before an hour ahead"),
        (issue(SECRET.as_bytes(), Role::Admin, "ops", Duration::from_secs(600)).expect("signs"), "neither"),
    ];
    for (token, what) in refused {
        let (status, answer) = app.graphql_as(Some(&token), query, json!({})).await;
        assert_eq!((status, code(&answer)), (401, "UNAUTHENTICATED"), "a token with {what}: {answer}");
        let connected = Subscription::connect(app.address, Some(&token)).await;
        assert!(connected.is_err(), "a WebSocket with a token with {what} is refused");
    }
    assert!(Subscription::connect(app.address, Some(&good)).await.is_ok(), "a good token connects");
}

async fn a_secret_shorter_than_32_bytes_stops_the_start(backend: Backend) {
    let isolation = Isolation::new(backend).await;
    let mut common = isolation.common();
    common.jwt_secret = Some("sixteen-byte-key".into());
    let shutdown = CancellationToken::new();
    let started = match backend {
        Backend::Embedded => Embedded::start(&common, shutdown.clone()).await.map(|_| ()),
        Backend::Server => {
            let infra = Infra::connect(&common, &isolation.server(), "test", Sides::All).await.expect("infrastructure");
            let mut tasks = tokio::task::JoinSet::new();
            let started = start_gateway(&infra, &common, &mut tasks, &shutdown).await.map(|_| ());
            tasks.abort_all();
            started
        }
    };
    shutdown.cancel();
    let error = started.expect_err("a 16-byte secret is refused at start");
    assert!(format!("{error:#}").contains("at least 32 bytes"), "a clear reason: {error:#}");
}
