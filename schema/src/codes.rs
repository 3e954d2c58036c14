//! Error codes: the stable, machine-readable half of every rejection and every
//! GraphQL error (`extensions.code`). Clients switch on these, so they never change.

/// The order does not exist (no events in its stream).
pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
/// The order was already cancelled.
pub const ORDER_ALREADY_CANCELLED: &str = "ORDER_ALREADY_CANCELLED";
/// An order id already has events: a place command cannot create it twice.
pub const ORDER_ALREADY_EXISTS: &str = "ORDER_ALREADY_EXISTS";
/// An order needs between 1 and 100 lines.
pub const INVALID_ITEM_COUNT: &str = "INVALID_ITEM_COUNT";
/// A line's quantity must be between 1 and 1000.
pub const INVALID_QUANTITY: &str = "INVALID_QUANTITY";
/// A unit price must not be negative.
pub const INVALID_PRICE: &str = "INVALID_PRICE";
/// A sku must be non-empty, at most 64 characters.
pub const INVALID_SKU: &str = "INVALID_SKU";
/// An id argument is not a UUID.
pub const INVALID_ID: &str = "INVALID_ID";
/// Some other input is out of range (a reason that is too long, a page size, ...).
pub const INVALID_INPUT: &str = "INVALID_INPUT";
/// The GraphQL document could not be parsed.
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// The GraphQL document does not match the schema (unknown field, wrong type, ...).
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// A dependency (NATS, the database) is unreachable; retrying later may work.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// Something failed inside Conveyor; the details are in the logs, under the correlation id.
pub const INTERNAL: &str = "INTERNAL";

/// Every code above, for lookups.
pub const ALL: &[&str] = &[
    ORDER_NOT_FOUND,
    ORDER_ALREADY_CANCELLED,
    ORDER_ALREADY_EXISTS,
    INVALID_ITEM_COUNT,
    INVALID_QUANTITY,
    INVALID_PRICE,
    INVALID_SKU,
    INVALID_ID,
    INVALID_INPUT,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    UNAVAILABLE,
    INTERNAL,
];
