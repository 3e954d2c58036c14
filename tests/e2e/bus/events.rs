//! Events the store does not vouch for change nothing; one a projector
//! cannot apply is kept, and the store catches the view up.

use std::time::Duration;

use async_nats::jetstream;
use conveyor::dlq;
use schema::{EventEnvelope, Namespace};
use serde_json::json;

use super::{confirmed_order, forged_cancellation, last_event, namespace, outsider, publish, wait_for_dead_letter};
use crate::helpers::{Backend, Isolation, TestApp, WAIT, assert_views_match_a_replay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_changes_no_view_and_the_real_event_after_it_applies() {
    let _one_at_a_time = super::one_at_a_time().await;
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
    let _one_at_a_time = super::one_at_a_time().await;
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

    // What an operator sees, then clears.
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor"));
        command.arg("dlq").args(args).args(["--namespace", ns.as_str(), "--nats", &crate::helpers::nats_url()]);
        async move {
            let output = tokio::time::timeout(WAIT, command.env_remove("NATS_URL").output())
                .await
                .expect("the CLI finishes")
                .expect("the CLI runs");
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    };
    let listed = cli(&["list"]).await;
    assert!(listed.contains("projector_orders") && listed.contains(&ahead.id.to_string()), "{listed}");
    let shown = cli(&["show", &letter.id.to_string()]).await;
    assert!(shown.contains("Conveyor-Dead-Letter-Reason: event") && shown.contains("\"stream_version\""), "{shown}");
    let kept = dlq::list(&js, &ns, 1000).await.expect("list").len();
    assert!(cli(&["purge"]).await.contains(&format!("purged {kept} dead letters")));
    assert!(dlq::list(&js, &ns, 1000).await.expect("list").is_empty());
}

/// Polls until `consumer` of `<ns>_EVENTS` has nothing left to deliver or to be acknowledged.
async fn wait_until_consumed(js: &jetstream::Context, ns: &Namespace, consumer: &str) {
    let stream = js.get_stream(ns.resource("EVENTS")).await.expect("the events stream");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = stream.consumer_info(ns.resource(consumer)).await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{consumer} never settled everything: {info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_projector_cannot_apply_is_kept_and_the_store_catches_the_view_up_once_fixed() {
    let _one_at_a_time = super::one_at_a_time().await;
    let isolation = Isolation::new(Backend::Server).await;
    let app = TestApp::spawn_server_configured(isolation, |_| {}, |server| server.max_deliver = 2).await;
    let (js, ns) = (outsider().await, namespace(&app));
    let (pool, _) = app.isolation.pools().await;
    sqlx::query(
        "CREATE FUNCTION refuse_stubborn() RETURNS trigger AS $$ BEGIN \
           IF NEW.sku = 'stubborn-1' THEN RAISE EXCEPTION 'the products view refuses stubborn-1'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&pool)
    .await
    .expect("create the trigger function");
    sqlx::query("CREATE TRIGGER refuse_stubborn BEFORE INSERT OR UPDATE ON products FOR EACH ROW EXECUTE FUNCTION refuse_stubborn()")
        .execute(&pool)
        .await
        .expect("create the trigger");

    let add = "mutation($input: AddProductInput!) { addProduct(input: $input) { status } }";
    let input = json!({ "sku": "stubborn-1", "name": "Mule", "priceCents": 100, "initialStock": 3 });
    let answer = app.graphql(add, json!({ "input": input })).await;
    assert_eq!(answer["data"]["addProduct"]["status"], "ACCEPTED", "{answer}");
    let letter = wait_for_dead_letter(&js, &ns, "projector_products", "for the event it could not apply", |letter| {
        letter.reason.starts_with("not applied in 2 deliveries")
    })
    .await;
    assert!(letter.reason.contains("the products view refuses stubborn-1"), "{letter:?}");
    assert_eq!(letter.delivered, "2");
    assert!(app.product("stubborn-1").await.is_null(), "not applied");

    // Fixed: the catch-up from the event store applies it, nothing lost.
    sqlx::query("DROP TRIGGER refuse_stubborn ON products").execute(&pool).await.expect("drop the trigger");
    let product = app.wait_for_product_sku("stubborn-1", |product| product["onHand"] == 3).await;
    assert_eq!(product["version"], 1, "{product}");

    // Redriving the kept event applies nothing twice.
    dlq::redrive(&js, &ns, letter.id).await.expect("redrive");
    for consumer in ["projector_products", "projector_orders"] {
        wait_until_consumed(&js, &ns, consumer).await;
    }
    let kept = dlq::list(&js, &ns, 1000).await.expect("list");
    assert!(kept.is_empty(), "the redriven event was applied (as already applied), not dead-lettered: {kept:#?}");
    assert_eq!(app.product("stubborn-1").await["version"], 1);
    assert_views_match_a_replay(&app.store, &app.gateway_views).await;
}
