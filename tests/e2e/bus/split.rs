//! The saga's steps over NATS: with the handler groups in separate
//! processes (`write-side --only …`), each side as its own NATS user, the
//! order saga sends its commands on `<ns>.cmd.internal.…` to the other
//! groups' process, which takes them there (and only there).

use serde_json::json;

use crate::helpers::{Backend, Isolation, graphql_at};
use crate::processes::{Conveyor, seed_shop, server_env, wait_final, wait_until_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_confirms_when_its_saga_reaches_stock_and_payment_in_another_process() {
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
