//! Error codes: the stable, machine-readable half of every rejection and every
//! GraphQL error (`extensions.code`). Clients switch on these, so they never change.

/// The order does not exist (no events in its stream).
pub const ORDER_NOT_FOUND: &str = "ORDER_NOT_FOUND";
/// The order was already cancelled.
pub const ORDER_ALREADY_CANCELLED: &str = "ORDER_ALREADY_CANCELLED";
/// An order id already has events: a place command cannot create it twice.
pub const ORDER_ALREADY_EXISTS: &str = "ORDER_ALREADY_EXISTS";
/// The order is not PENDING (confirm and reject need it to be).
pub const ORDER_NOT_PENDING: &str = "ORDER_NOT_PENDING";
/// Shipping needs a CONFIRMED order.
pub const ORDER_NOT_CONFIRMED: &str = "ORDER_NOT_CONFIRMED";
/// A shipped order can no longer be cancelled.
pub const ORDER_ALREADY_SHIPPED: &str = "ORDER_ALREADY_SHIPPED";
/// A rejected order can no longer be cancelled.
pub const ORDER_ALREADY_REJECTED: &str = "ORDER_ALREADY_REJECTED";
/// No customer with this id.
pub const CUSTOMER_NOT_FOUND: &str = "CUSTOMER_NOT_FOUND";
/// The customer id is already registered.
pub const CUSTOMER_ALREADY_EXISTS: &str = "CUSTOMER_ALREADY_EXISTS";
/// Another customer is registered with this email (compared trimmed and case-folded).
pub const CUSTOMER_EMAIL_TAKEN: &str = "CUSTOMER_EMAIL_TAKEN";
/// A customer's name must be 1 to 100 characters.
pub const INVALID_NAME: &str = "INVALID_NAME";
/// An email address must look like one (and be at most 254 characters).
pub const INVALID_EMAIL: &str = "INVALID_EMAIL";
/// A credit limit must be 0 to `MAX_CREDIT_LIMIT_CENTS`.
pub const INVALID_CREDIT_LIMIT: &str = "INVALID_CREDIT_LIMIT";
/// No product with this sku in the catalog.
pub const UNKNOWN_SKU: &str = "UNKNOWN_SKU";
/// A product with this sku is already in the catalog.
pub const PRODUCT_ALREADY_EXISTS: &str = "PRODUCT_ALREADY_EXISTS";
/// Not enough available stock for the reservation.
pub const OUT_OF_STOCK: &str = "OUT_OF_STOCK";
/// The client's expected unit price is not the catalog's.
pub const PRICE_MISMATCH: &str = "PRICE_MISMATCH";
/// The payment provider declined (e.g. the amount exceeds the credit limit).
pub const PAYMENT_DECLINED: &str = "PAYMENT_DECLINED";
/// The order is worth more than the customer's credit limit, as far as is
/// known before any stock is held (the prices the client expects, or a
/// line at the catalog price): rejected before stock is reserved, or
/// before more is.
pub const CREDIT_LIMIT_EXCEEDED: &str = "CREDIT_LIMIT_EXCEEDED";
/// The order is worth more than one order may be (`MAX_ORDER_CENTS`).
pub const ORDER_TOO_LARGE: &str = "ORDER_TOO_LARGE";
/// The payment provider failed; retrying may work.
pub const PAYMENT_PROVIDER_UNAVAILABLE: &str = "PAYMENT_PROVIDER_UNAVAILABLE";
/// Capture or refund of a payment that was never authorized.
pub const PAYMENT_NOT_AUTHORIZED: &str = "PAYMENT_NOT_AUTHORIZED";
/// A step of the order's transaction got no answer in time; it was compensated.
pub const STEP_TIMED_OUT: &str = "STEP_TIMED_OUT";
/// The order was cancelled while it was being processed.
pub const ORDER_CANCELLED: &str = "ORDER_CANCELLED";
/// An order needs between 1 and 100 lines (as sent, and after merging by sku).
pub const INVALID_ITEM_COUNT: &str = "INVALID_ITEM_COUNT";
/// A line's quantity must be between 1 and 1000, and so must the total of
/// one sku's lines in an order.
pub const INVALID_QUANTITY: &str = "INVALID_QUANTITY";
/// A price must be 0 to `MAX_PRICE_CENTS`.
pub const INVALID_PRICE: &str = "INVALID_PRICE";
/// A sku must be non-empty, at most 64 characters.
pub const INVALID_SKU: &str = "INVALID_SKU";
/// An id argument is not a UUID.
pub const INVALID_ID: &str = "INVALID_ID";
/// Some other input is out of range (a reason that is too long, a page size, ...).
pub const INVALID_INPUT: &str = "INVALID_INPUT";
/// An idempotency key was sent again with a different request; the first one stands.
pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
/// The HTTP request is no GraphQL request (its body is not JSON, its
/// variables not an object, …); nothing was run.
pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
/// The GraphQL document could not be parsed.
pub const GRAPHQL_PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
/// The GraphQL document does not match the schema (unknown field, wrong type, ...).
pub const GRAPHQL_VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
/// An automatic persisted query's hash is unknown: send the query with it.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// A dependency (NATS, the database) is unreachable; retrying later may work.
pub const UNAVAILABLE: &str = "UNAVAILABLE";
/// Conveyor is taking no more of this work now (too many commands in flight,
/// or too many orders still undecided); nothing was done. Retry after
/// `extensions.retryAfterSeconds` (HTTP: 503 with `Retry-After`).
pub const OVERLOADED: &str = "OVERLOADED";
/// This caller (token subject, else IP address) sent more operations than
/// its rate allows; nothing was done. Retry after `extensions.retryAfterSeconds`
/// (HTTP: 429 with `Retry-After`).
pub const RATE_LIMITED: &str = "RATE_LIMITED";
/// The document selects more fields or aliases (fragments counted where they
/// are spread) than the gateway answers; nothing was run.
pub const QUERY_TOO_LARGE: &str = "QUERY_TOO_LARGE";
/// The answer would be larger than the gateway sends; ask for less.
pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";
/// A mutation arrived over GET (as text or as a persisted query's hash):
/// mutations need POST (HTTP 405, `Allow: POST`).
pub const MUTATION_NEEDS_POST: &str = "MUTATION_NEEDS_POST";
/// A WebSocket connection already runs as many subscriptions as it may, or
/// a gateway as many gRPC `StreamEvents` calls.
pub const TOO_MANY_SUBSCRIPTIONS: &str = "TOO_MANY_SUBSCRIPTIONS";
/// A gRPC `StreamEvents` position is not one the gateway sent.
pub const INVALID_POSITION: &str = "INVALID_POSITION";
/// A gRPC `StreamEvents` reader left its queue of events full too long; the
/// status carries the position of the last event sent, to resume from.
pub const READER_TOO_SLOW: &str = "READER_TOO_SLOW";
/// Something failed inside Conveyor; the details are in the logs, under the correlation id.
pub const INTERNAL: &str = "INTERNAL";
/// The write side gave up on the command after its deliveries (e.g. a long
/// database outage). Nothing was decided; the command is kept in the
/// dead-letter stream, from where an operator can redrive it.
pub const COMMAND_FAILED: &str = "COMMAND_FAILED";

/// Every code above, for lookups.
pub const ALL: &[&str] = &[
    ORDER_NOT_PENDING,
    ORDER_NOT_CONFIRMED,
    ORDER_ALREADY_SHIPPED,
    ORDER_ALREADY_REJECTED,
    CUSTOMER_NOT_FOUND,
    CUSTOMER_ALREADY_EXISTS,
    CUSTOMER_EMAIL_TAKEN,
    INVALID_NAME,
    INVALID_EMAIL,
    INVALID_CREDIT_LIMIT,
    UNKNOWN_SKU,
    PRODUCT_ALREADY_EXISTS,
    OUT_OF_STOCK,
    PRICE_MISMATCH,
    PAYMENT_DECLINED,
    CREDIT_LIMIT_EXCEEDED,
    ORDER_TOO_LARGE,
    PAYMENT_PROVIDER_UNAVAILABLE,
    PAYMENT_NOT_AUTHORIZED,
    STEP_TIMED_OUT,
    ORDER_CANCELLED,
    ORDER_NOT_FOUND,
    ORDER_ALREADY_CANCELLED,
    ORDER_ALREADY_EXISTS,
    INVALID_ITEM_COUNT,
    INVALID_QUANTITY,
    INVALID_PRICE,
    INVALID_SKU,
    INVALID_ID,
    INVALID_INPUT,
    IDEMPOTENCY_KEY_REUSED,
    GRAPHQL_PARSE_FAILED,
    GRAPHQL_VALIDATION_FAILED,
    PERSISTED_QUERY_NOT_FOUND,
    UNAVAILABLE,
    OVERLOADED,
    RATE_LIMITED,
    INVALID_REQUEST,
    QUERY_TOO_LARGE,
    RESPONSE_TOO_LARGE,
    MUTATION_NEEDS_POST,
    TOO_MANY_SUBSCRIPTIONS,
    INVALID_POSITION,
    READER_TOO_SLOW,
    INTERNAL,
    COMMAND_FAILED,
];
