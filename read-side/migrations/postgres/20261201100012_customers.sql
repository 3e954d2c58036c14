-- no-transaction
-- A row appears with the customer's first event or first order, whichever
-- is projected first; `registered` says whether the customer exists.
CREATE TABLE IF NOT EXISTS customers (
    customer_id           TEXT PRIMARY KEY,
    registered            BIGINT NOT NULL,
    name                  TEXT NOT NULL,
    email                 TEXT NOT NULL,
    credit_limit_cents    BIGINT NOT NULL,
    order_count           BIGINT NOT NULL,
    lifetime_spend_cents  BIGINT NOT NULL,
    open_orders           BIGINT NOT NULL,
    registered_at         BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL
);
