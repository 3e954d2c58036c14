-- no-transaction
-- The last stream version each projection applied, per stream.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection  TEXT NOT NULL,
    stream_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (projection, stream_id)
);
