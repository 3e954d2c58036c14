//! `orderUpdated`: one order's view at once, then after each change;
//! `ordersUpdated`: every order as it is placed or changes (the live list).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, Error, ID, Subscription};
use futures::stream::{self, BoxStream, StreamExt};
use read_side::orders::{self as view, OrderFilter, OrderView};
use tokio_stream::wrappers::WatchStream;

use crate::graphql::Services;
use crate::graphql::commands::caller;
use crate::graphql::errors::{coded, internal, parse_id, unavailable};

use super::live::Reading;
use super::types::Order;

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's current view at once (as soon as it exists), then the
    /// view after each change (status, stock, payment, timeline). For a
    /// customer, another customer's order is a missing one: nothing is sent.
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let id = parse_id("id", &id)?.to_string();
        let caller = caller(ctx)?.clone();
        caller.require_known("follow orders")?;
        let services = ctx.data::<Services>()?.clone();
        // One watch and one read per change for every subscriber of the
        // order (see `live.rs`). A customer follows the order only as its
        // own: another customer's order is never read again.
        let scope = caller.customer_scope("follow orders")?;
        let readings = services.live_orders.follow(&id, scope.as_deref()).await.map_err(unavailable)?;
        let updates = WatchStream::new(readings)
            .scan(None::<Arc<OrderView>>, move |last, reading| {
                let item = match reading {
                    // Only the caller's rows, and only those that changed:
                    // readings may repeat, or be skipped for newer ones.
                    Reading::Row(Some(order))
                        if caller.may_see_orders_of(&order.customer_id)
                            && last.as_deref() != Some(&*order)
                            && is_newer(last.as_deref(), &order) =>
                    {
                        if last.is_some() {
                            schema::metrics::metrics().change_age("sent", super::live::change_age(&order));
                        }
                        let item = Order::single(OrderView::clone(&order));
                        *last = Some(order);
                        Some(Ok(item))
                    }
                    Reading::Failed(error) => Some(Err(internal(error))),
                    Reading::Unread | Reading::Row(_) => None,
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .take_until(services.shutdown.clone().cancelled_owned());
        Ok(updates.boxed())
    }

    /// Every order as it is placed and after each change, from now on (read
    /// `orders` first for the ones before). With `customerId`, only that
    /// customer's; a customer caller only ever gets its own. Filtered
    /// before anything is read: only that customer's changes reach it.
    async fn orders_updated(
        &self,
        ctx: &Context<'_>,
        customer_id: Option<ID>,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let mut customer = customer_id.map(|id| parse_id("customerId", &id).map(|id| id.to_string())).transpose()?;
        if let Some(me) = caller(ctx)?.customer_scope("follow orders")? {
            if customer.as_ref().is_some_and(|asked| *asked != me) {
                return Err(coded(crate::auth::FORBIDDEN, "a customer may follow only its own orders"));
            }
            customer = Some(me);
        }
        let services = ctx.data::<Services>()?.clone();
        let changes = match &customer {
            Some(customer) => services.notifier.watch_scope(view::VIEW, customer, None).await,
            None => services.notifier.watch_view(view::VIEW).await,
        }
        .map_err(unavailable)?;
        let shutdown = services.shutdown.clone();
        let updates = changes
            .then(move |change| {
                let (repository, customer) = (services.orders.clone(), customer.clone());
                async move {
                    if change.id.is_empty() {
                        // Missed some changes: the newest page covers what a live list shows.
                        let filter = OrderFilter { customer_id: customer, ..OrderFilter::default() };
                        return repository.list(&filter, None, LAG_REREAD).await;
                    }
                    let order = repository.get(&change.id).await?;
                    Ok(order
                        .into_iter()
                        .filter(|order| customer.as_ref().is_none_or(|c| *c == order.customer_id))
                        .collect())
                }
            })
            .scan(LastSent::default(), |sent, read| {
                let items: Vec<Result<Order, Error>> = match read {
                    Ok(orders) => orders
                        .into_iter()
                        .filter(|order| sent.is_new(order))
                        .map(|order| Ok(Order::single(order)))
                        .collect(),
                    Err(error) => vec![Err(internal(error))],
                };
                futures::future::ready(Some(stream::iter(items)))
            })
            .flatten()
            .take_until(shutdown.cancelled_owned());
        Ok(updates.boxed())
    }
}

/// How many of the newest orders `ordersUpdated` re-reads after missing changes.
const LAG_REREAD: u32 = 50;
/// How many orders' last-sent views `ordersUpdated` remembers to drop repeats.
const REMEMBERED: usize = 1_000;

/// The views `ordersUpdated` last sent, so repeated or late notifications
/// send nothing. Bounded: forgetting only costs a repeated (identical) item.
#[derive(Default)]
struct LastSent(HashMap<String, OrderView>);

impl LastSent {
    fn is_new(&mut self, order: &OrderView) -> bool {
        let last = self.0.get(&order.order_id);
        if last == Some(order) || !is_newer(last, order) {
            return false;
        }
        if self.0.len() >= REMEMBERED && last.is_none() {
            self.0.clear();
        }
        self.0.insert(order.order_id.clone(), order.clone());
        true
    }
}

/// A row read later is never older: same or higher order version.
fn is_newer(last: Option<&OrderView>, order: &OrderView) -> bool {
    last.is_none_or(|last| order.version >= last.version)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use read_side::orders::OrderStatus;

    use super::*;

    fn order(id: &str, version: u64, payment: &str) -> OrderView {
        OrderView {
            order_id: id.into(),
            customer_id: "c".into(),
            status: OrderStatus::Pending,
            items: Vec::new(),
            total_cents: 0,
            cancel_reason: None,
            payment_status: payment.into(),
            stock_status: "NONE".into(),
            rejection_code: None,
            rejection_reason: None,
            version,
            placed_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_feed_sends_each_view_once_and_never_an_older_one() {
        let mut sent = LastSent::default();
        let first = order("a", 1, "NONE");
        assert!(sent.is_new(&first), "first sighting");
        assert!(!sent.is_new(&first), "a repeated notification");
        let authorized = order("a", 1, "AUTHORIZED");
        assert!(sent.is_new(&authorized), "same version, changed view");
        assert!(sent.is_new(&order("a", 2, "AUTHORIZED")), "newer version");
        assert!(!sent.is_new(&authorized), "an older read arriving late");
        assert!(sent.is_new(&order("b", 1, "NONE")), "another order");
    }

    #[test]
    fn the_memory_is_bounded_and_forgetting_only_repeats() {
        let mut sent = LastSent::default();
        for n in 0..REMEMBERED {
            assert!(sent.is_new(&order(&n.to_string(), 1, "NONE")));
        }
        assert_eq!(sent.0.len(), REMEMBERED);
        assert!(sent.is_new(&order("one more", 1, "NONE")));
        assert_eq!(sent.0.len(), 1, "full: forgot the rest");
        assert!(sent.is_new(&order("0", 1, "NONE")), "a forgotten order is sent again, unchanged");
    }
}
