//! The open loop's view of decisions: ONE `ordersUpdated` subscription for
//! the bench's customer, opened before the load, that notes when each order
//! is first seen and when it reaches a final status. One socket costs the
//! gateway far less than a subscription per order, and it sees orders in
//! the order the read side projects them. It is best effort (a lagging
//! subscriber gets only the newest orders re-read), so what it does not
//! report final is double-checked with `order(id:)` afterwards.
//!
//! The socket and the sightings belong to one task; the bench hands it the
//! accepted order ids once the load is over, and the task ends when all of
//! them are final or the drain deadline passes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Gateway, Socket, protocol_message};

const SUBSCRIPTION: &str = "subscription($customerId: ID) { ordersUpdated(customerId: $customerId) { id status } }";
/// The graphql-transport-ws operation id of the one subscription.
const OPERATION: &str = "orders";
/// How often the drain says how many orders are still undecided.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A final order status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Final {
    Confirmed,
    Rejected,
    Cancelled,
}

impl Final {
    /// The final status a GraphQL `OrderStatus` names, if it is one
    /// (SHIPPED follows CONFIRMED: the bench counts it as confirmed).
    pub fn of(status: &str) -> Option<Self> {
        match status {
            "CONFIRMED" | "SHIPPED" => Some(Self::Confirmed),
            "REJECTED" => Some(Self::Rejected),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// When the feed first showed an order, and when it showed it final.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sighting {
    pub first_seen: Instant,
    pub decided: Option<(Instant, Final)>,
}

/// What the feed saw, and why it stopped early if it did.
#[derive(Debug, Default)]
pub(crate) struct Watched {
    pub sightings: HashMap<String, Sighting>,
    pub error: Option<String>,
}

/// A running feed: the task that owns the socket, and how to stop it.
pub(crate) struct Feed {
    finish: oneshot::Sender<(HashSet<String>, Instant)>,
    task: JoinHandle<Watched>,
}

impl Feed {
    /// Subscribes to the customer's orders. Call before the load starts.
    pub async fn open(gateway: &Gateway, customer_id: &str) -> anyhow::Result<Self> {
        let mut socket = gateway.subscribe_socket().await?;
        let payload = json!({ "query": SUBSCRIPTION, "variables": { "customerId": customer_id } });
        let subscribe = json!({ "id": OPERATION, "type": "subscribe", "payload": payload });
        socket.send(Message::text(subscribe.to_string())).await?;
        let (finish, finished) = oneshot::channel();
        Ok(Self { finish, task: tokio::spawn(watch(socket, finished)) })
    }

    /// Waits until every order in `awaited` is final, or until `deadline`,
    /// and returns what the feed saw.
    pub async fn finish(self, awaited: HashSet<String>, deadline: Instant) -> Watched {
        // A task that already ended (its socket failed) has dropped the receiver: nothing to tell it.
        let _ = self.finish.send((awaited, deadline));
        self.task.await.unwrap_or_else(|error| Watched { error: Some(error.to_string()), ..Watched::default() })
    }
}

async fn watch(mut socket: Socket, mut finished: oneshot::Receiver<(HashSet<String>, Instant)>) -> Watched {
    let mut tracker = Tracker::default();
    let mut deadline: Option<Instant> = None;
    let mut progress = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    let error = loop {
        if deadline.is_some() && tracker.undecided() == 0 {
            break None;
        }
        let until_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = socket.next() => {
                let frame = match frame {
                    None => break Some("the subscription's socket closed".to_string()),
                    Some(Err(error)) => break Some(format!("the subscription's socket failed: {error}")),
                    Some(Ok(frame)) => frame,
                };
                match protocol_message(&mut socket, frame).await {
                    Err(error) => break Some(format!("{error:#}")),
                    Ok(None) => {}
                    Ok(Some(message)) => {
                        if let Err(error) = tracker.record(&message, Instant::now()) {
                            break Some(error);
                        }
                    }
                }
            }
            handed = &mut finished, if deadline.is_none() => match handed {
                Ok((awaited, at)) => {
                    tracker.await_ids(awaited);
                    deadline = Some(at);
                }
                Err(_) => break None,
            },
            () = until_deadline => break None,
            _ = progress.tick(), if deadline.is_some() => {
                eprintln!("bench: waiting for decisions: {} orders undecided", tracker.undecided());
            }
        }
    };
    if let Some(error) = &error {
        eprintln!("bench: the ordersUpdated feed stopped: {error} (its orders are checked one by one)");
    }
    Watched { sightings: tracker.sightings, error }
}

/// The sightings, and how many of the awaited orders are still undecided.
#[derive(Default)]
struct Tracker {
    sightings: HashMap<String, Sighting>,
    awaited: HashSet<String>,
    undecided: usize,
    /// Whether a feed item carried errors already (said once, not per item).
    warned: bool,
}

impl Tracker {
    /// Notes one protocol message; `Err` when the subscription ended.
    fn record(&mut self, message: &Value, at: Instant) -> Result<(), String> {
        match message["type"].as_str() {
            Some("next") if message["id"] == OPERATION => {}
            Some("error") => return Err(format!("the subscription was refused: {}", message["payload"])),
            Some("complete") => return Err("the gateway completed the subscription".into()),
            _ => return Ok(()),
        }
        let payload = &message["payload"];
        if payload.get("errors").is_some() && !self.warned {
            self.warned = true;
            eprintln!("bench: the ordersUpdated feed sent an error: {}", payload["errors"]);
        }
        let order = &payload["data"]["ordersUpdated"];
        let (Some(id), Some(status)) = (order["id"].as_str(), order["status"].as_str()) else { return Ok(()) };
        let sighting = self.sightings.entry(id.to_string()).or_insert(Sighting { first_seen: at, decided: None });
        if sighting.decided.is_none()
            && let Some(status) = Final::of(status)
        {
            sighting.decided = Some((at, status));
            if self.awaited.contains(id) {
                self.undecided -= 1;
            }
        }
        Ok(())
    }

    /// From now on, counts how many of `awaited` are not final yet.
    fn await_ids(&mut self, awaited: HashSet<String>) {
        self.undecided = awaited
            .iter()
            .filter(|id| self.sightings.get(*id).is_none_or(|sighting| sighting.decided.is_none()))
            .count();
        self.awaited = awaited;
    }

    fn undecided(&self) -> usize {
        self.undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(id: &str, status: &str) -> Value {
        json!({ "type": "next", "id": OPERATION, "payload": { "data": { "ordersUpdated": { "id": id, "status": status } } } })
    }

    #[test]
    fn the_first_sighting_and_the_first_final_status_are_what_count() {
        let mut tracker = Tracker::default();
        let start = Instant::now();
        let later = start + Duration::from_millis(30);
        tracker.record(&next("a", "PENDING"), start).unwrap();
        tracker.record(&next("a", "CONFIRMED"), later).unwrap();
        tracker.record(&next("a", "CANCELLED"), later + Duration::from_secs(1)).unwrap();
        let a = tracker.sightings["a"];
        assert_eq!(a.first_seen, start);
        assert_eq!(a.decided, Some((later, Final::Confirmed)));
    }

    #[test]
    fn the_drain_counts_down_only_the_awaited_orders_seen_final() {
        let mut tracker = Tracker::default();
        let now = Instant::now();
        tracker.record(&next("early", "REJECTED"), now).unwrap();
        tracker.record(&next("slow", "PENDING"), now).unwrap();
        tracker.await_ids(HashSet::from(["early".into(), "slow".into(), "unseen".into()]));
        assert_eq!(tracker.undecided(), 2, "one was final before the drain began");
        tracker.record(&next("someone-else", "CONFIRMED"), now).unwrap();
        tracker.record(&next("slow", "CONFIRMED"), now).unwrap();
        tracker.record(&next("slow", "CONFIRMED"), now).unwrap();
        assert_eq!(tracker.undecided(), 1, "a repeated final status counts once");
        tracker.record(&next("unseen", "CANCELLED"), now).unwrap();
        assert_eq!(tracker.undecided(), 0);
    }

    #[test]
    fn other_operations_are_ignored_and_an_ended_subscription_is_an_error() {
        let mut tracker = Tracker::default();
        let now = Instant::now();
        let other = json!({ "type": "next", "id": "x", "payload": { "data": { "ordersUpdated": { "id": "a", "status": "CONFIRMED" } } } });
        tracker.record(&other, now).unwrap();
        assert!(tracker.sightings.is_empty());
        assert!(tracker.record(&json!({ "type": "error", "id": OPERATION, "payload": [] }), now).is_err());
        assert!(tracker.record(&json!({ "type": "complete", "id": OPERATION }), now).is_err());
    }

    #[test]
    fn only_final_statuses_are_final() {
        assert_eq!(Final::of("PENDING"), None);
        assert_eq!(Final::of("SHIPPED"), Some(Final::Confirmed));
        assert_eq!(Final::of("REJECTED"), Some(Final::Rejected));
    }
}
