-- The order's cancellation reached its saga (set in the cancellation's own
-- transaction; the saga acts on it when it next runs).
ALTER TABLE sagas ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
