//! The `orders` view: one denormalized row per order, with its payment and
//! stock status, and its timeline.

mod projection;
mod repository;

pub use projection::OrdersProjection;
pub use repository::{OrderCursor, OrderFilter, OrderRepository, OrderStatus, OrderView, TimelineEntry, ViewLine};

/// The view's name in change notifications (`changed.orders.<id>`).
pub const VIEW: &str = "orders";
