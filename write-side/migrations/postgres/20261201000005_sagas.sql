-- no-transaction
-- Process managers' state, one row per business transaction.
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
