-- no-transaction
-- Read-side views. PostgreSQL and CockroachDB: one DDL statement per
-- migration, idempotent, run outside a transaction (see docs/operations.md).
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
