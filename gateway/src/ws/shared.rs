//! Identical state subscriptions share one execution. async-graphql gives
//! each subscription its own parsed document, variables, extension
//! instances and execution stream — about 11 KiB each (heaptrack, 10 000
//! `orderUpdated`s) — and executes the selection set once per subscriber
//! for every change. But twenty subscribers of one order with the same
//! document, variables and caller get the very same values: so the first
//! one's execution runs for all of them, and each later one holds only a
//! `watch` receiver of its latest response.
//!
//! Only subscriptions whose every value is the whole current state
//! ([`STATE_FIELDS`]) are shared: a subscriber that joins late starts from
//! the latest value, which for such a field is exactly what its own
//! execution would have sent first. A feed of events (`ordersUpdated`) is
//! not shared here (it shares its reads instead, see `live_list.rs`).
//! Authorization is unchanged: the caller is part of what must be
//! identical, so no one receives what another caller's execution may see.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{Data, Executor, Request, Response};
use futures::stream::{BoxStream, StreamExt};
use schema::metrics::{GaugeGuard, metrics};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::auth::Caller;
use crate::graphql::ConveyorSchema;

/// Subscription fields whose every value is the whole current state of
/// what they follow, so a late subscriber may start from the latest one.
pub const STATE_FIELDS: &[&str] = &["orderUpdated"];

/// The shared executions of one gateway. Cloning shares them.
#[derive(Clone, Default)]
pub struct SharedSubscriptions {
    running: Arc<Mutex<HashMap<String, Latest>>>,
}

/// A shared execution's latest response (`None` before the first).
type Latest = watch::Sender<Option<Arc<Response>>>;

impl SharedSubscriptions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Latest>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's executor: the schema, with identical state
/// subscriptions shared across every connection of the gateway.
#[derive(Clone)]
pub struct SharingExecutor {
    pub schema: ConveyorSchema,
    pub shared: SharedSubscriptions,
}

impl Executor for SharingExecutor {
    async fn execute(&self, request: Request) -> Response {
        self.schema.execute(request).await
    }

    fn execute_stream(&self, request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        let session_data = session_data.unwrap_or_default();
        match sharing_key(&request, &session_data) {
            Some(key) => self.join(key, request, session_data),
            None => self.schema.execute_stream_with_session_data(request, session_data),
        }
    }
}

impl SharingExecutor {
    /// The shared execution under `key`, started with `request` if none runs.
    fn join(&self, key: String, request: Request, session_data: Arc<Data>) -> BoxStream<'static, Response> {
        let mut running = self.shared.lock();
        let latest = match running.get(&key) {
            Some(latest) => latest.subscribe(),
            None => {
                let (sender, latest) = watch::channel(None);
                running.insert(key.clone(), sender.clone());
                let execution = self.schema.execute_stream_with_session_data(request, session_data);
                tokio::spawn(drive(self.shared.clone(), key, sender, execution));
                latest
            }
        };
        drop(running);
        // Counted per subscriber; the shared execution itself is not (see `drive`).
        let open = GaugeGuard::new(&metrics().subscriptions_active);
        WatchStream::new(latest)
            .filter_map(move |latest| {
                let _held = &open;
                futures::future::ready(latest.map(|response| copy(&response)))
            })
            .boxed()
    }
}

/// Runs one shared execution, keeping its latest response, until it ends
/// (then so do its subscribers) or no one subscribes any more.
async fn drive(shared: SharedSubscriptions, key: String, sender: Latest, mut execution: BoxStream<'static, Response>) {
    // The execution's own stream counts itself as an open subscription;
    // its subscribers are what is open, and each counts itself.
    metrics().subscriptions_active.dec();
    loop {
        tokio::select! {
            response = execution.next() => match response {
                Some(response) => {
                    sender.send_replace(Some(Arc::new(response)));
                }
                None => {
                    forget(&mut shared.lock(), &key, &sender);
                    break;
                }
            },
            () = sender.closed() => {
                // Under the lock, so no one joins what is about to end.
                let mut running = shared.lock();
                if sender.receiver_count() == 0 {
                    forget(&mut running, &key, &sender);
                    break;
                }
            }
        }
    }
    drop(execution);
    metrics().subscriptions_active.inc();
}

/// Removes `key`'s entry if it is still `sender`'s.
fn forget(running: &mut HashMap<String, Latest>, key: &str, sender: &Latest) {
    if running.get(key).is_some_and(|entry| entry.same_channel(sender)) {
        running.remove(key);
    }
}

/// A copy of a shared response for one subscriber.
fn copy(response: &Response) -> Response {
    let mut copy = Response::new(response.data.clone());
    copy.extensions = response.extensions.clone();
    copy.cache_control = response.cache_control;
    copy.errors = response.errors.clone();
    copy.http_headers = response.http_headers.clone();
    copy
}

/// What makes two subscriptions identical — document, operation,
/// variables and caller — if `request` is a state subscription that may
/// be shared; `None` for anything else.
fn sharing_key(request: &Request, session_data: &Data) -> Option<String> {
    if !request.uploads.is_empty() || !request.extensions.is_empty() || !request.data.is_empty() {
        return None;
    }
    // Cheap before parsing: every shared field is named in the document.
    if !STATE_FIELDS.iter().any(|field| request.query.contains(field)) {
        return None;
    }
    let caller = session_data.get(&TypeId::of::<Caller>())?.downcast_ref::<Caller>()?;
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let only_state_fields = operation.node.ty == OperationType::Subscription
        && operation.node.selection_set.node.items.iter().all(|selection| match &selection.node {
            Selection::Field(field) => STATE_FIELDS.contains(&field.node.name.node.as_str()),
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
        });
    if !only_state_fields {
        return None;
    }
    let variables = serde_json::to_string(&request.variables).ok()?;
    Some(format!("{caller:?}\n{:?}\n{variables}\n{}", request.operation_name, request.query))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(caller: Caller) -> Data {
        let mut data = Data::default();
        data.insert(caller);
        data
    }

    const FOLLOW: &str = "subscription($id: ID!) { orderUpdated(id: $id) { id status } }";

    fn follow(id: &str) -> Request {
        Request::new(FOLLOW).variables(async_graphql::Variables::from_json(serde_json::json!({ "id": id })))
    }

    #[test]
    fn only_identical_state_subscriptions_of_one_caller_share() {
        let open = session(Caller::Open);
        let key = sharing_key(&follow("o1"), &open).expect("a state subscription is shared");
        assert_eq!(sharing_key(&follow("o1"), &open).as_ref(), Some(&key), "identical: the same key");
        assert_ne!(sharing_key(&follow("o2"), &open).as_ref(), Some(&key), "other variables");
        let customer = session(Caller::Authenticated { role: crate::auth::Role::Customer, subject: "c1".into() });
        assert_ne!(sharing_key(&follow("o1"), &customer).as_ref(), Some(&key), "another caller");
        assert!(sharing_key(&follow("o1"), &Data::default()).is_none(), "no caller known");
        let feed = Request::new("subscription { ordersUpdated { id } }");
        assert!(sharing_key(&feed, &open).is_none(), "a feed of events is not state");
        let both = Request::new("subscription { orderUpdated(id: \"o1\") { id } ordersUpdated { id } }");
        assert!(sharing_key(&both, &open).is_none(), "not only state");
        let spread =
            Request::new("subscription { ...F } fragment F on Subscription { orderUpdated(id: \"o1\") { id } }");
        assert!(sharing_key(&spread, &open).is_none(), "fragments are not looked into");
        let query = Request::new("query { orderUpdated }");
        assert!(sharing_key(&query, &open).is_none(), "not a subscription");
    }
}
