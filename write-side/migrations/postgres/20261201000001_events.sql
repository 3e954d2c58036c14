-- no-transaction
-- The event store: the truth. PostgreSQL and CockroachDB: one DDL statement
-- per migration, idempotent, run outside a transaction (see docs/operations.md).
-- Every event, in its aggregate's stream. The unique (stream_id, version)
-- pair is the optimistic-concurrency check.
CREATE TABLE IF NOT EXISTS events (
    event_id        TEXT PRIMARY KEY,
    stream_id       TEXT NOT NULL,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    version         BIGINT NOT NULL,
    type_name       TEXT NOT NULL,
    schema_version  BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    correlation_id  TEXT NOT NULL,
    causation_id    TEXT NOT NULL,
    actor           TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);
