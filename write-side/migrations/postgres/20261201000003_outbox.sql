-- no-transaction
-- Events committed but not yet confirmed published.
CREATE TABLE IF NOT EXISTS outbox (
    event_id    TEXT PRIMARY KEY,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
