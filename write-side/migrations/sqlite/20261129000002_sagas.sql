-- Process managers' state, one row per business transaction. `version` is
-- the optimistic-concurrency check between processes driving the same saga;
-- `active` and `next_attempt_at` let a sweeper resume sagas a crash or a
-- missing answer left behind.
CREATE TABLE IF NOT EXISTS sagas (
    saga_id          TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    correlation_id   TEXT NOT NULL,
    causation_id     TEXT NOT NULL,
    version          BIGINT NOT NULL,
    active           BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS sagas_due ON sagas (active, next_attempt_at);
