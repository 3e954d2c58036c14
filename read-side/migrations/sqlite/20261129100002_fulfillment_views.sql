-- Views for the business transaction: the order's progress and timeline,
-- customers and products. Portable SQL (CockroachDB, PostgreSQL, SQLite).

ALTER TABLE orders ADD COLUMN payment_status TEXT NOT NULL DEFAULT 'NONE';
ALTER TABLE orders ADD COLUMN stock_status TEXT NOT NULL DEFAULT 'NONE';
ALTER TABLE orders ADD COLUMN rejection_code TEXT;
ALTER TABLE orders ADD COLUMN rejection_reason TEXT;
-- Orders now start PENDING, until the saga confirms or rejects them.
UPDATE orders SET status = 'PENDING' WHERE status = 'PLACED';

-- Every event of an order and of the steps taken for it.
CREATE TABLE IF NOT EXISTS order_timeline (
    order_id        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    causation_id    TEXT NOT NULL,
    actor           TEXT NOT NULL,
    summary         TEXT NOT NULL,
    PRIMARY KEY (order_id, event_id)
);

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

-- Per order, what the customer view needs to know to undo it.
CREATE TABLE IF NOT EXISTS customer_orders (
    order_id     TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    open         BIGINT NOT NULL,
    spent_cents  BIGINT NOT NULL
);

-- The catalog with stock. The CHECK is the stock invariant, held by every
-- projected version: nothing reserved that is not on hand.
CREATE TABLE IF NOT EXISTS products (
    sku          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    price_cents  BIGINT NOT NULL,
    on_hand      BIGINT NOT NULL,
    reserved     BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    added_at     BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    CONSTRAINT products_stock CHECK (reserved >= 0 AND reserved <= on_hand)
);
