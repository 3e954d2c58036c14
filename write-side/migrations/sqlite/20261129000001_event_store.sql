-- The event store: the truth. Portable SQL (CockroachDB, PostgreSQL, SQLite):
-- TEXT ids, BIGINT microsecond timestamps, JSON payloads as TEXT.

-- Every event, in its aggregate's stream. The unique (stream_id, version)
-- pair is the optimistic-concurrency check: two writers that decided on the
-- same version cannot both append.
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

-- The decided outcome of every command, written in the events' transaction:
-- a redelivered or retried command finds it here and appends nothing.
CREATE TABLE IF NOT EXISTS command_outcomes (
    command_id  TEXT PRIMARY KEY,
    outcome     TEXT NOT NULL,
    decided_at  BIGINT NOT NULL
);

-- Events committed but not yet confirmed published. The command handler
-- deletes its rows after publishing; the relay publishes what a crash left.
CREATE TABLE IF NOT EXISTS outbox (
    event_id    TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS outbox_by_age ON outbox (created_at);
