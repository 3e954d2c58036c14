-- Rows changed outside the running process, for it to announce (its change
-- notifications are in-process): a `conveyor projection rebuild` writes them
-- in its switch's transaction; the process reads, deletes and announces them
-- (read_side::rebuild::announcements). One per row: the latest version.
CREATE TABLE IF NOT EXISTS view_announcements (
    view     TEXT NOT NULL,
    id       TEXT NOT NULL,
    version  BIGINT NOT NULL,
    -- '' for a row of no one.
    scope    TEXT NOT NULL,
    PRIMARY KEY (view, id)
);
