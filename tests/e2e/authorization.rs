//! Every caller kept to what is theirs (docs/operations.md, "Who may do
//! what"), on both backends: command outcomes for their senders only, a
//! customer unable to tell another's orders from missing ones, `service`
//! without customers' personal data, staff hidden from customers in the
//! timeline, and change notifications narrowed so one customer's feed reads
//! nothing of another's orders.

use std::time::Duration;

use gateway::Role;
use gateway::auth::issue;
use schema::envelope::derived_id;
use serde_json::{Value, json};

use crate::helpers::{Backend, Isolation, Subscription, TestApp, WAIT};

crate::on_both_backends!(
    command_outcomes_are_shown_only_to_their_sender_and_admin,
    a_customer_cannot_tell_another_customers_order_from_a_missing_one,
    service_works_on_orders_but_reads_no_personal_data_and_customers_see_no_staff_ids,
    a_customers_order_feed_reads_nothing_of_other_customers_orders,
    an_answer_kept_for_one_caller_is_never_given_to_another,
);

const SECRET: &str = "a-test-secret-of-32-bytes-length";
const UNKNOWN: &str = "0193a7d0-0000-7000-8000-00000000c0de";

fn token(role: Role, subject: &str) -> String {
    issue(SECRET.as_bytes(), role, subject, Duration::from_secs(600)).expect("signs")
}

fn code(answer: &Value) -> &str {
    answer["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// A shop with tokens: an admin, a service, and two registered customers.
struct Shop {
    app: TestApp,
    admin: String,
    service: String,
    alice: (String, String),
    bob: (String, String),
}

impl Shop {
    async fn open(backend: Backend) -> Self {
        let app = TestApp::spawn_configured(Isolation::new(backend).await, |common| {
            common.jwt_secret = Some(SECRET.into());
            common.mutation_wait = Duration::from_secs(3);
        })
        .await;
        let admin = token(Role::Admin, "ops");
        let add = "mutation { addProduct(input: { sku: \"lamp\", name: \"Lamp\", priceCents: 100, initialStock: 500, consistency: AWAIT_VIEW }) { status } }";
        let (_, added) = app.graphql_as(Some(&admin), add, json!({})).await;
        assert_eq!(added["data"]["addProduct"]["status"], "ACCEPTED", "{added}");
        let register = "mutation($name: String!, $email: String!) { registerCustomer(input: { name: $name, email: $email, creditLimitCents: 100000, consistency: AWAIT_VIEW }) { customerId } }";
        let mut customers = Vec::new();
        for name in ["Alice", "Bob"] {
            let email = format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple());
            let (_, registered) = app.graphql_as(Some(&admin), register, json!({ "name": name, "email": email })).await;
            let id = registered["data"]["registerCustomer"]["customerId"].as_str().expect("id").to_string();
            customers.push((token(Role::Customer, &id), id));
        }
        let bob = customers.pop().expect("Bob");
        let alice = customers.pop().expect("Alice");
        Self { app, admin, service: token(Role::Service, "shipping"), alice, bob }
    }

    /// Places an order of one lamp as `customer`; returns (command id, order id).
    async fn place(&self, (token, customer): &(String, String)) -> (String, String) {
        let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { commandId status orderId } }";
        let input = json!({ "input": { "customerId": customer, "items": [{ "sku": "lamp", "quantity": 1 }] } });
        let (_, placed) = self.app.graphql_as(Some(token), place, input).await;
        let payload = &placed["data"]["placeOrder"];
        assert_eq!(payload["status"], "ACCEPTED", "{placed}");
        (payload["commandId"].as_str().expect("command id").into(), payload["orderId"].as_str().expect("id").into())
    }

    async fn confirmed(&self, order: &str) {
        self.app.wait_for_order_as(&self.admin, order, |order| order["status"] == "CONFIRMED").await;
    }
}

async fn command_outcomes_are_shown_only_to_their_sender_and_admin(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (command, order) = shop.place(&shop.alice).await;
    shop.confirmed(&order).await;
    let outcome = "query($id: ID!) { commandOutcome(commandId: $id) { commandId status } }";
    let ask = |token: &str, id: &str| {
        let (app, token, id) = (&shop.app, token.to_string(), id.to_string());
        async move { app.graphql_as(Some(&token), outcome, json!({ "id": id })).await.1 }
    };
    let seen = json!({ "data": { "commandOutcome": { "commandId": command, "status": "ACCEPTED" } } });
    let unseen = json!({ "data": { "commandOutcome": null } });
    assert_eq!(ask(&shop.alice.0, &command).await, seen, "the sender sees its outcome");
    assert_eq!(ask(&shop.admin, &command).await, seen, "admin sees every outcome");
    assert_eq!(ask(&shop.bob.0, &command).await, unseen, "another customer sees nothing");
    assert_eq!(ask(&shop.service, &command).await, unseen, "service sees only its own commands");
    assert_eq!(ask(&shop.bob.0, UNKNOWN).await, unseen, "the same answer as for a command never sent");
    // The saga's steps derive their ids from the order: only admin reads
    // them (where the bus knows them: in server mode a step run in process
    // leaves its outcome in SQL only, and no one reads it).
    let reserve = derived_id("saga", &format!("{order}:reserve:lamp")).to_string();
    if backend == Backend::Embedded {
        let step = ask(&shop.admin, &reserve).await;
        assert_eq!(step["data"]["commandOutcome"]["status"], "ACCEPTED", "{step}");
    }
    assert_eq!(ask(&shop.alice.0, &reserve).await, unseen, "not even the order's customer reads the saga's");
}

async fn a_customer_cannot_tell_another_customers_order_from_a_missing_one(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (_, alices) = shop.place(&shop.alice).await;
    shop.confirmed(&alices).await;
    let bob = &shop.bob.0;

    // Queries: the very same answer.
    let read = "query($id: ID!) { order(id: $id) { id status } }";
    let (_, others) = shop.app.graphql_as(Some(bob), read, json!({ "id": alices })).await;
    let (_, missing) = shop.app.graphql_as(Some(bob), read, json!({ "id": UNKNOWN })).await;
    assert_eq!(others, missing, "another's order reads as a missing one");
    assert_eq!(others, json!({ "data": { "order": null } }));

    // Mutations: ORDER_NOT_FOUND for both, after the same wait, and nothing changes.
    let cancel = "mutation($id: ID!) { cancelOrder(input: { orderId: $id, reason: \"mine now\" }) { status } }";
    // The same work too: the gateway reads the view as often for either.
    let reads = || shop.app.gateway_views.statements();
    let before = reads();
    let (_, others) = shop.app.graphql_as(Some(bob), cancel, json!({ "id": alices })).await;
    let between = reads();
    let (_, missing) = shop.app.graphql_as(Some(bob), cancel, json!({ "id": UNKNOWN })).await;
    assert_eq!(between - before, reads() - between, "as many reads for another's order as for a missing one");
    assert_eq!((code(&others), code(&missing)), ("ORDER_NOT_FOUND", "ORDER_NOT_FOUND"), "{others} {missing}");
    assert_eq!(others["data"], missing["data"]);
    assert_eq!(shop.app.count_events("order", &alices, "OrderCancelled").await, 0, "nothing was sent");

    // Subscriptions: nothing for either, while the owner sees the change.
    let follow = "subscription($id: ID!) { orderUpdated(id: $id) { id status } }";
    let mut others = Subscription::start_as(shop.app.address, Some(bob), follow, json!({ "id": alices })).await;
    let mut owner =
        Subscription::start_as(shop.app.address, Some(&shop.alice.0), follow, json!({ "id": alices })).await;
    assert_eq!(owner.next_data().await["orderUpdated"]["status"], "CONFIRMED");
    let (_, cancelled) = shop.app.graphql_as(Some(&shop.alice.0), cancel, json!({ "id": alices })).await;
    assert_eq!(cancelled["data"]["cancelOrder"]["status"], "ACCEPTED", "{cancelled}");
    owner.next_data_until("CANCELLED", |data| data["orderUpdated"]["status"] == "CANCELLED").await;
    assert_eq!(others.next_data_within(Duration::from_millis(500)).await, None, "Bob is told nothing");
}

async fn service_works_on_orders_but_reads_no_personal_data_and_customers_see_no_staff_ids(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (_, order) = shop.place(&shop.alice).await;
    shop.confirmed(&order).await;
    let service = Some(shop.service.as_str());

    // Orders, yes; the people behind them, no.
    let read = "query($id: ID!) { order(id: $id) { id customerId } }";
    let (_, answer) = shop.app.graphql_as(service, read, json!({ "id": order })).await;
    assert_eq!(answer["data"]["order"]["customerId"], shop.alice.1.as_str(), "{answer}");
    let with_customer = "query($id: ID!) { order(id: $id) { id customer { name email } } }";
    let (_, answer) = shop.app.graphql_as(service, with_customer, json!({ "id": order })).await;
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    assert!(answer["data"]["order"]["customer"].is_null(), "{answer}");
    let list = "{ orders(first: 5) { edges { node { id customer { name } } } } }";
    let (_, answer) = shop.app.graphql_as(service, list, json!({})).await;
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    let person = "query($id: ID!) { customer(id: $id) { name email creditLimitCents } }";
    let (_, answer) = shop.app.graphql_as(service, person, json!({ "id": shop.alice.1 })).await;
    assert_eq!((code(&answer), &answer["data"]["customer"]), ("FORBIDDEN", &Value::Null), "{answer}");
    let (_, answer) =
        shop.app.graphql_as(service, "{ customers(first: 5) { edges { node { email } } } }", json!({})).await;
    assert_eq!(code(&answer), "FORBIDDEN", "{answer}");
    // Admin and the customer itself still read them.
    for who in [&shop.admin, &shop.alice.0] {
        let (_, answer) = shop.app.graphql_as(Some(who), with_customer, json!({ "id": order })).await;
        assert_eq!(answer["data"]["order"]["customer"]["name"], "Alice", "{answer}");
    }

    // Service ships it; the customer's timeline says "staff", admin's says who.
    let ship = "mutation($id: ID!) { shipOrder(input: { orderId: $id }) { status } }";
    let (_, shipped) = shop.app.graphql_as(service, ship, json!({ "id": order })).await;
    assert_eq!(shipped["data"]["shipOrder"]["status"], "ACCEPTED", "{shipped}");
    let timeline = "query($id: ID!) { order(id: $id) { status timeline { type actor } } }";
    let actor_of = |answer: &Value, event: &str| {
        let entries = answer["data"]["order"]["timeline"].as_array().cloned().unwrap_or_default();
        entries.iter().find(|entry| entry["type"] == event).map(|entry| entry["actor"].clone())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let as_customer = loop {
        let (_, answer) = shop.app.graphql_as(Some(&shop.alice.0), timeline, json!({ "id": order })).await;
        if actor_of(&answer, "OrderShipped").is_some() {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "the shipment never reached the timeline: {answer}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(actor_of(&as_customer, "OrderShipped"), Some(json!("staff")), "{as_customer}");
    let own = format!("customer:{}", shop.alice.1);
    assert_eq!(actor_of(&as_customer, "OrderPlaced"), Some(json!(own)), "the customer sees itself");
    assert!(!as_customer.to_string().contains("shipping"), "no staff id anywhere: {as_customer}");
    let (_, as_admin) = shop.app.graphql_as(Some(&shop.admin), timeline, json!({ "id": order })).await;
    assert_eq!(actor_of(&as_admin, "OrderShipped"), Some(json!("service:shipping")), "{as_admin}");
}

async fn a_customers_order_feed_reads_nothing_of_other_customers_orders(backend: Backend) {
    let shop = Shop::open(backend).await;
    let feed = "subscription { ordersUpdated { id status } }";
    let mut alices_feed = Subscription::start_as(shop.app.address, Some(&shop.alice.0), feed, json!({})).await;
    // The feed is live once it delivers one of Alice's orders.
    let (_, first) = shop.place(&shop.alice).await;
    alices_feed.next_data_until("Alice's first order", |data| data["ordersUpdated"]["id"] == first.as_str()).await;
    shop.confirmed(&first).await;
    // Bob's orders move through every step; the orders view is watched
    // through a pool of the test's own, so only the gateway's reads count.
    let (_, views) = shop.app.isolation.stores().await;
    let before = shop.app.gateway_views.statements();
    let mut bobs = Vec::new();
    for _ in 0..10 {
        bobs.push(shop.place(&shop.bob).await.1);
    }
    for order in &bobs {
        let deadline = tokio::time::Instant::now() + WAIT;
        while views
            .get(order)
            .await
            .expect("orders view")
            .is_none_or(|order| order.total_cents == 0 || order.status != read_side::orders::OrderStatus::Confirmed)
        {
            assert!(tokio::time::Instant::now() < deadline, "Bob's order {order} never confirmed");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // A change of Alice's after all of Bob's: the feed has taken every notification before it.
    let (_, second) = shop.place(&shop.alice).await;
    alices_feed.next_data_until("Alice's second order", |data| data["ordersUpdated"]["id"] == second.as_str()).await;
    let reads = shop.app.gateway_views.statements() - before;
    // Placing goes through no view read; each of Alice's changes costs one.
    // Bob's ten orders (four changes each at least) would cost forty.
    assert!(reads < 10, "Alice's feed read {reads} rows while Bob's orders changed");
}

/// The gateway keeps whole answers per request and caller
/// (gateway/src/graphql/orders/answers.rs): the very same request bytes
/// from another caller are answered for that caller.
async fn an_answer_kept_for_one_caller_is_never_given_to_another(backend: Backend) {
    let shop = Shop::open(backend).await;
    let (_, alices) = shop.place(&shop.alice).await;
    shop.confirmed(&alices).await;
    let (alice, bob) = (Some(shop.alice.0.as_str()), Some(shop.bob.0.as_str()));
    let read = "query($id: ID!) { order(id: $id) { id status } }";
    let list = "{ orders(first: 20) { totalCount edges { node { id customerId } } } }";
    for _ in 0..3 {
        let (_, own) = shop.app.graphql_as(alice, read, json!({ "id": alices })).await;
        assert_eq!(own["data"]["order"]["id"], alices.as_str(), "{own}");
        let (_, others) = shop.app.graphql_as(bob, read, json!({ "id": alices })).await;
        assert_eq!(others, json!({ "data": { "order": null } }), "Bob never gets Alice's kept answer");

        let (_, owns) = shop.app.graphql_as(alice, list, json!({})).await;
        assert_eq!(owns["data"]["orders"]["totalCount"], 1, "{owns}");
        let (_, bobs) = shop.app.graphql_as(bob, list, json!({})).await;
        assert_eq!(bobs["data"]["orders"]["totalCount"], 0, "{bobs}");
        assert_eq!(bobs["data"]["orders"]["edges"], json!([]), "{bobs}");
        let (_, all) = shop.app.graphql_as(Some(&shop.admin), list, json!({})).await;
        assert_eq!(all["data"]["orders"]["totalCount"], 1, "{all}");
        // No token: refused, however often Alice's answer was kept.
        let (status, anonymous) = shop.app.graphql_as(None, read, json!({ "id": alices })).await;
        assert!(anonymous["data"]["order"].is_null(), "{status} {anonymous}");
    }
}
