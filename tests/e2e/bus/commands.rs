//! Commands are taken only from where they may come; one given up answers
//! FAILED and is redriven with `conveyor dlq` once its cause is fixed.

use std::time::Duration;

use conveyor::dlq;
use schema::CommandEnvelope;
use serde_json::json;

use super::{command, confirmed_order, namespace, outsider, publish, wait_for_dead_letter};
use crate::helpers::{Backend, Isolation, TestApp, WAIT, assert_views_match_a_replay, nats_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sagas_commands_from_outside_it_and_commands_on_the_wrong_subject_are_refused_and_kept() {
    let _one_at_a_time = super::one_at_a_time().await;
    let app = TestApp::spawn(Backend::Server).await;
    let (js, ns) = (outsider().await, namespace(&app));
    let customer = app.shop().await;
    let order_id = confirmed_order(&app, &customer).await;
    let refund = |actor: &str| command("payment", &order_id, "RefundPayment", actor, json!({ "order_id": order_id }));

    // A refund of a confirmed order, on the clients' subject: refused.
    let public = refund("saga:order-fulfillment");
    publish(&js, ns.command_subject("payment", "RefundPayment"), serde_json::to_vec(&public).expect("json")).await;
    // On the saga's subject but in a client's name: refused.
    let impostor = refund("customer:mallory");
    publish(&js, ns.internal_command_subject("payment", "RefundPayment"), serde_json::to_vec(&impostor).expect("json"))
        .await;
    // A client's command in the saga's name: refused.
    let restock = json!({ "quantity": 5 });
    let saga_named = command("product", "book-1", "RestockProduct", "saga:order-fulfillment", restock.clone());
    publish(&js, ns.command_subject("product", "RestockProduct"), serde_json::to_vec(&saga_named).expect("json")).await;
    // A valid restock on another command's subject: refused.
    let misrouted = command("product", "book-1", "RestockProduct", "admin:ops", restock);
    publish(&js, ns.command_subject("product", "AddProduct"), serde_json::to_vec(&misrouted).expect("json")).await;

    let reason_of = |command: &CommandEnvelope| {
        let id = command.id;
        let (js, ns) = (js.clone(), ns.clone());
        async move {
            wait_for_dead_letter(&js, &ns, "write-side", "for the refused command", |letter| {
                serde_json::from_slice::<CommandEnvelope>(&letter.body).is_ok_and(|body| body.id == id)
            })
            .await
            .reason
        }
    };
    assert!(reason_of(&public).await.contains("is the order saga's command"));
    assert!(reason_of(&impostor).await.contains("must be issued by the order saga"));
    assert!(reason_of(&saga_named).await.contains("cannot claim the saga's actor"));
    assert!(reason_of(&misrouted).await.contains("does not match the envelope"));

    // No outcome was given under their ids, and nothing happened.
    let outcome = "query($id: ID!) { commandOutcome(commandId: $id) { status } }";
    for refused in [&public, &impostor, &saga_named, &misrouted] {
        let answer = app.graphql(outcome, json!({ "id": refused.id.to_string() })).await;
        assert!(answer["data"]["commandOutcome"].is_null(), "{answer}");
    }
    assert_eq!(app.count_events("payment", &order_id, "PaymentRefunded").await, 0);
    assert_eq!(app.count_events("product", "book-1", "ProductRestocked").await, 0);
    let order = app.order(&order_id).await;
    assert_eq!((&order["status"], &order["paymentStatus"]), (&json!("CONFIRMED"), &json!("AUTHORIZED")), "{order}");
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}

/// Makes every append to one aggregate's stream fail, as a database that
/// refuses it would, until [`heal`].
async fn break_appends_to(pool: &sqlx::AnyPool, aggregate_id: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_appends() RETURNS trigger AS $$ BEGIN \
           IF NEW.aggregate_id = '{aggregate_id}' THEN RAISE EXCEPTION 'appends to {aggregate_id} refused by the test'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql"
    )))
    .execute(pool)
    .await
    .expect("create the trigger function");
    sqlx::query("CREATE TRIGGER refuse_appends BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_appends()")
        .execute(pool)
        .await
        .expect("create the trigger");
}

async fn heal(pool: &sqlx::AnyPool) {
    sqlx::query("DROP TRIGGER refuse_appends ON events").execute(pool).await.expect("drop the trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_given_up_answers_failed_and_is_redriven_once_its_cause_is_fixed() {
    let _one_at_a_time = super::one_at_a_time().await;
    let isolation = Isolation::new(Backend::Server).await;
    let app = TestApp::spawn_server_configured(isolation, |_| {}, |server| server.max_deliver = 3).await;
    let (js, ns) = (outsider().await, namespace(&app));
    let (pool, _) = app.isolation.pools().await;
    break_appends_to(&pool, "fragile-1").await;

    let add = "mutation($input: AddProductInput!) { addProduct(input: $input) { commandId status error { code } } }";
    let input = json!({ "sku": "fragile-1", "name": "Glass", "priceCents": 900, "initialStock": 4 });
    let answer = app.graphql(add, json!({ "input": input })).await;
    let payload = &answer["data"]["addProduct"];
    assert_eq!(payload["status"], "FAILED", "the waiting mutation is told: {answer}");
    assert_eq!(payload["error"]["code"], "COMMAND_FAILED", "{answer}");
    let command_id = payload["commandId"].as_str().expect("command id").to_string();
    let outcome = "query($id: ID!) { commandOutcome(commandId: $id) { status error { code } } }";
    let asked = app.graphql(outcome, json!({ "id": command_id })).await;
    assert_eq!(asked["data"]["commandOutcome"]["status"], "FAILED", "{asked}");
    assert_eq!(asked["data"]["commandOutcome"]["error"]["code"], "COMMAND_FAILED", "{asked}");

    let letter = wait_for_dead_letter(&js, &ns, "write-side", "for the given-up command", |letter| {
        letter.body_text().contains(&command_id)
    })
    .await;
    assert!(letter.reason.starts_with("failed 3 times"), "{letter:?}");
    assert!(letter.reason.contains("refused by the test"), "{letter:?}");
    assert_eq!(letter.delivered, "3");
    assert_eq!(letter.original_subject, ns.command_subject("product", "AddProduct"));
    assert!(letter.headers.iter().any(|(name, value)| name == "Conveyor-Original-Msg-Id" && *value == command_id));
    assert_eq!(app.count_events("product", "fragile-1", "ProductAdded").await, 0);

    // The cause fixed, an operator redrives it with the CLI.
    heal(&pool).await;
    let redrive = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"))
        .args(["dlq", "redrive", &letter.id.to_string(), "--namespace", ns.as_str(), "--nats", &nats_url()])
        .env_remove("NATS_URL")
        .output();
    let redrive = tokio::time::timeout(WAIT, redrive).await.expect("the CLI finishes").expect("the CLI runs");
    assert!(redrive.status.success(), "{}", String::from_utf8_lossy(&redrive.stderr));
    assert!(String::from_utf8_lossy(&redrive.stdout).contains("redrove dead letter"));

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let asked = app.graphql(outcome, json!({ "id": command_id })).await;
        if asked["data"]["commandOutcome"]["status"] == "ACCEPTED" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the redriven command was never accepted: {asked}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.wait_for_product_sku("fragile-1", |product| product["onHand"] == 4).await;
    assert_eq!(app.count_events("product", "fragile-1", "ProductAdded").await, 1);
    assert!(dlq::list(&js, &ns, 1000).await.expect("list").iter().all(|kept| kept.id != letter.id), "redriven: gone");
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}
