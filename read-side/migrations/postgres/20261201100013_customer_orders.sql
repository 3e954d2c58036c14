-- no-transaction
-- Per order, what the customer view needs to know to undo it.
CREATE TABLE IF NOT EXISTS customer_orders (
    order_id     TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    open         BIGINT NOT NULL,
    spent_cents  BIGINT NOT NULL
);
