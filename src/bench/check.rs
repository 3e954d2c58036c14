//! The double check after the drain: orders the feed did not report final
//! are read one by one with `order(id:)`, since the feed is best effort.
//! Bounded in time, so a stalled gateway cannot hang the bench.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::client::Gateway;
use super::feed::Final;

const ORDER: &str = "query($id: ID!) { order(id: $id) { status } }";
/// Reads in flight at once: enough to finish thousands in seconds, few
/// enough not to add much load to a gateway that is still busy.
const IN_FLIGHT: usize = 16;

/// What `order(id:)` said about one order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    Final(Final),
    /// Still PENDING.
    Undecided,
    /// No such order in the view (yet).
    Missing,
    /// The query failed.
    Unknown,
}

/// Reads the status of each of `ids` until `deadline`; ids not read by then
/// are absent from the answer.
pub(crate) async fn statuses(gateway: &Gateway, ids: Vec<String>, deadline: Instant) -> HashMap<String, Checked> {
    let reads = futures::stream::iter(ids)
        .map(|id| async move {
            let checked = match gateway.post(ORDER, json!({ "id": id })).await {
                Err(_) => Checked::Unknown,
                Ok(answer) => match answer["data"]["order"]["status"].as_str() {
                    Some(status) => Final::of(status).map_or(Checked::Undecided, Checked::Final),
                    None if answer["data"]["order"].is_null() && answer.get("errors").is_none() => Checked::Missing,
                    None => Checked::Unknown,
                },
            };
            (id, checked)
        })
        .buffer_unordered(IN_FLIGHT)
        .take_until(tokio::time::sleep_until(deadline));
    reads.collect().await
}

/// How long the double check may take at most.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
