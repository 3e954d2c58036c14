//! Each side's NATS user may publish only what that side publishes, and
//! the documented configuration is the one the suite runs with.

use schema::Namespace;
use uuid::Uuid;

use crate::helpers::WAIT;

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
    let _one_at_a_time = super::one_at_a_time().await;
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
        ns.changed_subject("orders", "o", None),
        ns.dead_letter_subject("write-side"),
    ];
    let through = let_through(&ns, "gateway", &gateway, ns.command_subject("probe", "Marker")).await;
    assert!(through.is_empty(), "the gateway's user published {through:?}");
    let write_side = [ns.command_subject("order", "PlaceOrder"), ns.changed_subject("orders", "o", None)];
    let through = let_through(&ns, "write-side", &write_side, ns.outcome_subject(&id)).await;
    assert!(through.is_empty(), "the write side's user published {through:?}");
    let read_side = [
        ns.command_subject("order", "PlaceOrder"),
        ns.internal_command_subject("order", "ConfirmOrder"),
        ns.event_subject("order", "o"),
        ns.outcome_subject(&id),
    ];
    let through = let_through(&ns, "read-side", &read_side, ns.changed_subject("orders", "o", None)).await;
    assert!(through.is_empty(), "the read side's user published {through:?}");
}

#[test]
fn the_documented_nats_configuration_is_the_one_the_suite_runs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = std::fs::read_to_string(root.join("scripts/nats-server.conf")).expect("scripts/nats-server.conf");
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).expect("docs/operations.md");
    assert!(docs.contains(&config), "docs/operations.md must show scripts/nats-server.conf as it is");
}
