-- Read-side views. Portable SQL (CockroachDB, PostgreSQL, SQLite).

-- One row per order, denormalized for the GraphQL queries.
CREATE TABLE IF NOT EXISTS orders (
    order_id       TEXT PRIMARY KEY,
    customer_id    TEXT NOT NULL,
    status         TEXT NOT NULL,
    items          TEXT NOT NULL,
    total_cents    BIGINT NOT NULL,
    cancel_reason  TEXT,
    version        BIGINT NOT NULL,
    placed_at      BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- Newest-first pages, overall, per customer and per status.
CREATE INDEX IF NOT EXISTS orders_newest ON orders (placed_at, order_id);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, placed_at, order_id);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, placed_at, order_id);

-- The last stream version each projection applied, per stream; advanced in
-- the same transaction as the view rows, so an event applies exactly once.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (projection, stream_id)
);
