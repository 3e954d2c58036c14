//! `orderUpdated`: the order's view at once, then after each change.

use async_graphql::{Context, Error, ID, Subscription};
use futures::stream::{self, BoxStream, StreamExt};
use read_side::orders::{self as view, OrderView};

use crate::graphql::Services;
use crate::graphql::commands::caller;
use crate::graphql::errors::{internal, parse_id, unavailable};

use super::types::Order;

#[derive(Default)]
pub struct OrderSubscription;

#[Subscription]
impl OrderSubscription {
    /// The order's current view at once (as soon as it exists), then the
    /// view after each change (status, stock, payment, timeline).
    async fn order_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<BoxStream<'static, Result<Order, Error>>, Error> {
        let id = parse_id("id", &id)?.to_string();
        let caller = caller(ctx)?.clone();
        caller.require_known("follow orders")?;
        let services = ctx.data::<Services>()?.clone();
        // Watch before the first read, so no change falls between the two.
        let changes = services.notifier.watch(view::VIEW, &id).await.map_err(unavailable)?;
        let shutdown = services.shutdown.clone();
        let reads = stream::once(futures::future::ready(())).chain(changes.map(|_| ()));
        let updates = reads
            .then(move |()| {
                let repository = services.orders.clone();
                let id = id.clone();
                async move { repository.get(&id).await }
            })
            .scan((None::<OrderView>, false), move |(last, ended), read| {
                if *ended {
                    return futures::future::ready(None);
                }
                let item = match read {
                    Ok(Some(order)) => match caller.require_customer(&order.customer_id, "follow this order") {
                        // Not the caller's: say so, then end.
                        Err(error) => {
                            *ended = true;
                            Some(Err(error))
                        }
                        // Only rows that changed: notifications may repeat or arrive late.
                        Ok(()) if last.as_ref() != Some(&order) && is_newer(last.as_ref(), &order) => {
                            *last = Some(order.clone());
                            Some(Ok(Order::single(order)))
                        }
                        Ok(()) => None,
                    },
                    Ok(None) => None,
                    Err(error) => Some(Err(internal(error))),
                };
                futures::future::ready(Some(item))
            })
            .filter_map(futures::future::ready)
            .take_until(shutdown.cancelled_owned());
        Ok(updates.boxed())
    }
}

/// A row read later is never older: same or higher order version.
fn is_newer(last: Option<&OrderView>, order: &OrderView) -> bool {
    last.is_none_or(|last| order.version >= last.version)
}
