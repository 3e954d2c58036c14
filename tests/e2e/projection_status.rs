//! `conveyor projection status`: each projection's position and lag, read
//! from the checkpoints and the event store by the real binary, on both
//! backends.

use std::process::Command;

use crate::helpers::{Backend, Isolation, TestApp, WAIT, is_final, items};

crate::on_both_backends!(status_shows_each_projection_caught_up_and_then_one_stream_behind);

/// One line of the status table.
#[derive(Debug)]
struct Line {
    projection: String,
    streams: i64,
    applied: i64,
    in_store: i64,
    lag_events: i64,
    lag_seconds: f64,
}

/// Runs `conveyor projection status` against the isolation's store.
fn status(isolation: &Isolation) -> Vec<Line> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conveyor"));
    command.env_remove("DATABASE_URL").args(["projection", "status"]);
    match isolation.backend {
        Backend::Server => command.args(["--database", &isolation.server().database]),
        Backend::Embedded => {
            let dir = isolation.data_dir.as_ref().expect("a data directory");
            command.arg("--data-dir").arg(dir)
        }
    };
    let output = command.output().expect("conveyor projection status runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", String::from_utf8_lossy(&output.stderr));
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header.first(), Some(&"projection"), "{stdout}");
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let number = |at: usize| cells[at].parse::<i64>().unwrap_or_else(|_| panic!("a number in `{line}`"));
            Line {
                projection: cells[0].to_owned(),
                streams: number(1),
                applied: number(2),
                in_store: number(3),
                lag_events: number(4),
                lag_seconds: cells[5].parse().unwrap_or_else(|_| panic!("seconds in `{line}`")),
            }
        })
        .collect()
}

async fn status_shows_each_projection_caught_up_and_then_one_stream_behind(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let customer = app.shop().await;
    let placed = app.place_order(&customer, items(), None).await;
    let order_id = placed["orderId"].as_str().expect("an order id").to_owned();
    app.wait_for_order(&order_id, "a final status", is_final).await;

    // Every projection catches up with the store (bounded wait).
    let deadline = std::time::Instant::now() + WAIT;
    let caught_up = loop {
        let lines = status(&app.isolation);
        if lines.iter().all(|line| line.lag_events == 0) {
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "the projections never caught up: {lines:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let names: Vec<&str> = caught_up.iter().map(|line| line.projection.as_str()).collect();
    assert_eq!(names, ["orders", "customers", "products"]);
    for line in &caught_up {
        assert!(line.in_store > 0 && line.streams > 0, "{line:?}");
        assert_eq!(line.applied, line.in_store, "caught up: {line:?}");
        assert_eq!(line.lag_seconds, 0.0, "{line:?}");
    }
    let isolation = app.stop().await;

    // The orders view loses the order's checkpoint: it is that stream's
    // events behind, and says how old the oldest of them is.
    let (_, views) = isolation.pools().await;
    let stream = format!("order-{order_id}");
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE projection = 'orders' AND stream_id = $1")
            .bind(&stream)
            .fetch_one(&views)
            .await
            .expect("the order's checkpoint");
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = 'orders' AND stream_id = $1")
        .bind(&stream)
        .execute(&views)
        .await
        .expect("checkpoint deleted");
    views.close().await;
    let behind = status(&isolation);
    let orders = &behind[0];
    assert_eq!(orders.lag_events, version, "{orders:?}");
    assert_eq!(orders.applied, caught_up[0].applied - version, "{orders:?}");
    assert_eq!(orders.streams, caught_up[0].streams - 1, "{orders:?}");
    assert!(orders.lag_seconds > 0.0, "{orders:?}");
    assert_eq!(behind[1].lag_events, 0, "the other projections are untouched");
}
