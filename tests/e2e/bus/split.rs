//! The saga's steps over NATS: with the handler groups in separate
//! processes (`write-side --only …`), each side as its own NATS user, the
//! order saga sends its commands on `<ns>.cmd.internal.…` to the other
//! groups' process, which takes them there (and only there).

use serde_json::json;

use crate::helpers::{Backend, Isolation, graphql_at};
use crate::processes::{Conveyor, seed_shop, server_env, wait_final, wait_until_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_confirms_when_its_saga_reaches_stock_and_payment_in_another_process() {
    let _one_at_a_time = super::one_at_a_time().await;
    let isolation = Isolation::new(Backend::Server).await;
    let env = server_env(&isolation);
    let orders = Conveyor::start(&["write-side", "--only", "order"], &env);
    let others = Conveyor::start(&["write-side", "--only", "stock,payment,customer"], &env);
    let read_side = Conveyor::start(&["read-side"], &env);
    let gateway = Conveyor::start(&["gateway"], &env);
    orders.wait_for_line("order saga running");
    others.wait_for_line("write side running");
    read_side.wait_for_line("projector running");
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    let http = reqwest::Client::new();
    let customer = seed_shop(&http, address).await;

    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let input = json!({ "customerId": customer, "items": [{ "sku": "book-1", "quantity": 2 }, { "sku": "pen-9", "quantity": 1 }] });
    let answer = graphql_at(&http, address, place, json!({ "input": input })).await;
    assert_eq!(answer["data"]["placeOrder"]["status"], "ACCEPTED", "{answer}");
    let id = answer["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();
    let order = wait_final(&http, address, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "reserved and authorized in the other process: {order}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_outcome_for_a_remote_step_is_not_believed() {
    let _one_at_a_time = super::one_at_a_time().await;
    let isolation = Isolation::new(Backend::Server).await;
    let env = server_env(&isolation);
    let ns = schema::Namespace::new(&isolation.namespace).expect("valid namespace");
    let orders = Conveyor::start(&["write-side", "--only", "order,customer,payment"], &env);
    let read_side = Conveyor::start(&["read-side"], &env);
    let gateway = Conveyor::start(&["gateway"], &env);
    orders.wait_for_line("order saga running");
    read_side.wait_for_line("projector running");
    let address = gateway.graphql_address();
    wait_until_ready(address).await;
    let http = reqwest::Client::new();
    // The catalog needs the stock group: it runs for the seeding, then stops.
    let mut stock = Conveyor::start(&["write-side", "--only", "stock"], &env);
    stock.wait_for_line("write side running");
    let customer = seed_shop(&http, address).await;
    stock.signal("TERM");
    assert!(stock.wait_exit().success());

    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { status orderId } }";
    let input = json!({ "customerId": customer, "items": [{ "sku": "book-1", "quantity": 1 }] });
    let answer = graphql_at(&http, address, place, json!({ "input": input })).await;
    assert_eq!(answer["data"]["placeOrder"]["status"], "ACCEPTED", "{answer}");
    let id = answer["data"]["placeOrder"]["orderId"].as_str().expect("order id").to_string();

    // The saga now waits for its reservation, which no process takes: tell
    // it, as the write side would, that the stock ran out.
    let step = schema::envelope::derived_id("saga", &format!("{id}:reserve:book-1"));
    let forged = schema::CommandOutcome {
        command_id: step,
        aggregate_type: "product".into(),
        aggregate_id: "book-1".into(),
        status: schema::OutcomeStatus::Rejected,
        rejection: Some(schema::Rejection::new(schema::codes::OUT_OF_STOCK, "forged")),
        stream_version: 0,
        event_ids: Vec::new(),
        decided_at: chrono::Utc::now(),
        fingerprint: None,
        sender: Some("saga:order-fulfillment".into()),
    };
    let forger = crate::helpers::nats_client().await;
    let subject = ns.outcome_subject(&step);
    let payload = serde_json::to_vec(&forged).expect("json");
    let stop = tokio_util::sync::CancellationToken::new();
    let forging = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_millis(50));
            while !stop.is_cancelled() {
                every.tick().await;
                let _ = forger.publish(subject.clone(), payload.clone().into()).await;
            }
        }
    });
    tokio::task::block_in_place(|| orders.wait_for_line("an outcome on the bus that the store does not have"));
    stop.cancel();
    forging.await.expect("the forger stops");

    // The stock group back, the reservation is decided for real.
    let stock = Conveyor::start(&["write-side", "--only", "stock"], &env);
    stock.wait_for_line("write side running");
    let order = wait_final(&http, address, &id).await;
    assert_eq!(order["status"], "CONFIRMED", "the forged OUT_OF_STOCK was not believed: {order}");
}
