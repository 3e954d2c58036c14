-- no-transaction
-- The decided outcome of every command, written in the events' transaction.
CREATE TABLE IF NOT EXISTS command_outcomes (
    command_id  TEXT PRIMARY KEY,
    outcome     TEXT NOT NULL,
    decided_at  BIGINT NOT NULL
);
