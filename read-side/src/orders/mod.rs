//! The `orders` view: one denormalized row per order.

mod projection;
mod repository;

pub use projection::OrdersProjection;
pub use repository::{OrderCursor, OrderFilter, OrderRepository, OrderStatus, OrderView};

/// The view's name in change notifications (`changed.orders.<id>`).
pub const VIEW: &str = "orders";
