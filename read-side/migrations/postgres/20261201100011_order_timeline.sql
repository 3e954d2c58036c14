-- no-transaction
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
