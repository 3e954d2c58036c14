//! The bus is not the truth (invariant 8), on the server backend: whoever
//! can publish on NATS — here the test, with the server's full rights — can
//! forge neither a fact nor a saga step. Forged events, events ahead of the
//! store, junk bytes, the saga's commands from outside, commands on the
//! wrong subject: each changes nothing and is kept in the `<ns>_DLQ`
//! stream with its reason. A command the write side gives up on answers
//! FAILED and is redriven once its cause is fixed. Every view equals a
//! replay of the event store afterwards.

use std::time::Duration;

use async_nats::jetstream;
use conveyor::dlq::{self, DeadLetter};
use schema::ports::EventLog;
use schema::{CommandEnvelope, EventEnvelope, Metadata, Namespace};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, Isolation, TestApp, WAIT, assert_views_match_a_replay, is_final, items, nats_url};

/// The test's own NATS connection: an outsider with every right.
async fn outsider() -> jetstream::Context {
    jetstream::new(crate::helpers::nats_client().await)
}

fn namespace(app: &TestApp) -> Namespace {
    Namespace::new(&app.isolation.namespace).expect("valid namespace")
}

/// Publishes `payload` to `subject` on JetStream, waiting until it is stored.
async fn publish(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", Uuid::now_v7().to_string().as_str());
    js.publish_with_headers(subject, headers, payload.into()).await.expect("publish").await.expect("stored");
}

/// Polls the dead-letter stream until one from `source` satisfies `found`.
async fn wait_for_dead_letter(
    js: &jetstream::Context,
    ns: &Namespace,
    source: &str,
    what: &str,
    found: impl Fn(&DeadLetter) -> bool,
) -> DeadLetter {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let letters = dlq::list(js, ns, 1000).await.unwrap_or_default();
        if let Some(letter) = letters.iter().find(|letter| letter.source == source && found(letter)) {
            return letter.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter from {source} {what}; kept: {letters:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A confirmed order of the shop's customer; returns its id.
async fn confirmed_order(app: &TestApp, customer: &str) -> String {
    let placed = app.place_order(customer, items(), None).await;
    assert_eq!(placed["status"], "ACCEPTED", "{placed}");
    let id = placed["orderId"].as_str().expect("order id").to_string();
    let order = app.wait_for_order(&id, "decided", is_final).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    id
}

/// The last event of a stream, from the store.
async fn last_event(app: &TestApp, aggregate: &str, id: &str) -> EventEnvelope {
    let events = EventLog::read_stream(&app.store, aggregate, id, 1, u64::MAX).await.expect("read stream");
    events.last().expect("the stream has events").clone()
}

/// An `OrderCancelled` no one decided, `ahead` versions past the stream's head.
fn forged_cancellation(last: &EventEnvelope, ahead: u64) -> EventEnvelope {
    let mut forged = last.clone();
    forged.id = Uuid::now_v7();
    forged.type_name = "OrderCancelled".into();
    forged.schema_version = 2;
    forged.stream_version = last.stream_version + ahead;
    forged.metadata.actor = "customer:mallory".into();
    forged.payload = json!({ "reason": "forged", "customer_id": last.payload["customer_id"], "was_confirmed": true });
    forged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_changes_no_view_and_the_real_event_after_it_applies() {
    let app = TestApp::spawn(Backend::Server).await;
    let (js, ns) = (outsider().await, namespace(&app));
    let customer = app.shop().await;
    let order_id = confirmed_order(&app, &customer).await;
    let before = app.order(&order_id).await;
    let last = last_event(&app, "order", &order_id).await;

    // The next version of the stream, as a forger would guess it.
    let forged = forged_cancellation(&last, 1);
    publish(&js, ns.event_subject("order", &order_id), serde_json::to_vec(&forged).expect("json")).await;
    let letter = wait_for_dead_letter(&js, &ns, "projector_orders", "for the forged event", |letter| {
        letter.reason.contains(&forged.id.to_string())
    })
    .await;
    assert!(letter.reason.contains("is not in the event store"), "{letter:?}");
    assert_eq!(letter.original_subject, ns.event_subject("order", &order_id));
    assert_eq!(letter.delivered, "1");
    assert_eq!(serde_json::from_slice::<EventEnvelope>(&letter.body).expect("the body kept as sent"), forged);
    assert_eq!(app.order(&order_id).await, before, "the forged cancellation changed nothing");

    // The genuine event with that very version applies normally.
    let cancelled = app.cancel_order(&order_id, "changed my mind", None).await;
    assert_eq!(cancelled["status"], "ACCEPTED", "{cancelled}");
    let order = app
        .wait_for_order(&order_id, "cancelled and refunded", |order| {
            order["status"] == "CANCELLED" && order["paymentStatus"] == "REFUNDED" && order["stockStatus"] == "RELEASED"
        })
        .await;
    assert_eq!(order["cancelReason"], "changed my mind", "{order}");
    assert_eq!(app.count_events("order", &order_id, "OrderCancelled").await, 1);
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_and_events_ahead_of_the_store_are_kept_as_dead_letters_and_change_nothing() {
    let app = TestApp::spawn(Backend::Server).await;
    let (js, ns) = (outsider().await, namespace(&app));
    let customer = app.shop().await;
    let order_id = confirmed_order(&app, &customer).await;
    let before = app.order(&order_id).await;
    let last = last_event(&app, "order", &order_id).await;

    publish(&js, ns.event_subject("order", &order_id), b"\x00\xffnot json".to_vec()).await;
    let ahead = forged_cancellation(&last, 5);
    publish(&js, ns.event_subject("order", &order_id), serde_json::to_vec(&ahead).expect("json")).await;
    // A real event's id with a forged body: the store's copy is what counts.
    let mut relabelled = last.clone();
    relabelled.type_name = "OrderCancelled".into();
    relabelled.stream_version = last.stream_version + 1;
    publish(&js, ns.event_subject("order", &order_id), serde_json::to_vec(&relabelled).expect("json")).await;

    let junk = wait_for_dead_letter(&js, &ns, "projector_orders", "for the junk", |letter| {
        letter.reason.contains("not an event envelope")
    })
    .await;
    assert_eq!(junk.body.as_ref(), b"\x00\xffnot json");
    // Without verification this one would wait for the missing versions forever.
    let letter = wait_for_dead_letter(&js, &ns, "projector_orders", "for the event ahead", |letter| {
        letter.reason.contains(&ahead.id.to_string())
    })
    .await;
    assert!(letter.reason.contains("is not in the event store"), "{letter:?}");
    let letter = wait_for_dead_letter(&js, &ns, "projector_orders", "for the relabelled event", |letter| {
        letter.reason.contains(&relabelled.id.to_string())
    })
    .await;
    assert!(letter.reason.contains("but the event store has it as"), "{letter:?}");
    // The customers view reads order events too, and keeps its own dead letters.
    wait_for_dead_letter(&js, &ns, "projector_customers", "for the event ahead", |letter| {
        letter.reason.contains(&ahead.id.to_string())
    })
    .await;

    assert_eq!(app.order(&order_id).await, before, "nothing changed");
    // The projectors go on: the next order is shown.
    confirmed_order(&app, &customer).await;
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}

/// A command envelope as a client of the bus would write it.
fn command(aggregate: &str, id: &str, type_name: &str, actor: &str, payload: Value) -> CommandEnvelope {
    let command_id = Uuid::now_v7();
    CommandEnvelope {
        id: command_id,
        type_name: type_name.into(),
        schema_version: 1,
        aggregate_type: aggregate.into(),
        aggregate_id: id.into(),
        metadata: Metadata::origin(command_id, actor),
        timestamp: chrono::Utc::now(),
        payload,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sagas_commands_from_outside_it_and_commands_on_the_wrong_subject_are_refused_and_kept() {
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

/// Publishes `denied` then `marker` as `user`, and returns what an admin
/// subscribed to the whole namespace received up to the marker: a
/// connection's messages arrive in order, so anything of `denied` the server
/// let through arrives before the marker.
async fn let_through(ns: &Namespace, user: &str, denied: &[String], marker: String) -> Vec<String> {
    let watcher = crate::helpers::nats_client().await;
    let mut everything = watcher.subscribe(format!("{ns}.>")).await.expect("subscribe");
    watcher.flush().await.expect("flush");
    let client = schema::nats::connect(&crate::helpers::side_nats_url(user), "test-permissions", &Default::default())
        .await
        .unwrap_or_else(|error| panic!("{user} connects: {error}"));
    for subject in denied {
        // Refused by the server (a permissions violation on the connection).
        let _ = client.publish(subject.clone(), "forged".into()).await;
    }
    client.publish(marker.clone(), "marker".into()).await.expect("publish the marker");
    client.flush().await.expect("flush");
    let mut received = Vec::new();
    loop {
        let message = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut everything))
            .await
            .unwrap_or_else(|_| panic!("{user} may publish {marker}, yet it never arrived"))
            .expect("subscription open");
        if message.subject.as_str() == marker {
            return received;
        }
        received.push(message.subject.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sides_nats_user_may_publish_only_what_that_side_publishes() {
    if std::env::var("CONVEYOR_NATS_GATEWAY_PASSWORD").is_err() {
        eprintln!("skipped: the NATS server has no users (scripts/test starts one with scripts/nats-server.conf)");
        return;
    }
    let ns = Namespace::new(crate::helpers::unique_namespace()).expect("valid namespace");
    let id = Uuid::now_v7();
    let gateway = [
        ns.internal_command_subject("payment", "RefundPayment"),
        format!("{ns}.cmd.internal.payment"),
        ns.event_subject("order", "o"),
        ns.outcome_subject(&id),
        ns.changed_subject("orders", "o"),
        ns.dead_letter_subject("write-side"),
    ];
    let through = let_through(&ns, "gateway", &gateway, ns.command_subject("probe", "Marker")).await;
    assert!(through.is_empty(), "the gateway's user published {through:?}");
    let write_side = [ns.command_subject("order", "PlaceOrder"), ns.changed_subject("orders", "o")];
    let through = let_through(&ns, "write-side", &write_side, ns.outcome_subject(&id)).await;
    assert!(through.is_empty(), "the write side's user published {through:?}");
    let read_side = [
        ns.command_subject("order", "PlaceOrder"),
        ns.internal_command_subject("order", "ConfirmOrder"),
        ns.event_subject("order", "o"),
        ns.outcome_subject(&id),
    ];
    let through = let_through(&ns, "read-side", &read_side, ns.changed_subject("orders", "o")).await;
    assert!(through.is_empty(), "the read side's user published {through:?}");
}

#[test]
fn the_documented_nats_configuration_is_the_one_the_suite_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("scripts/nats-server.conf")).expect("scripts/nats-server.conf");
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).expect("docs/operations.md");
    assert!(docs.contains(&config), "docs/operations.md must show scripts/nats-server.conf as it is");
}
