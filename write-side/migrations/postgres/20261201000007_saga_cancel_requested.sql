-- no-transaction
-- The order's cancellation reached its saga.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS cancel_requested BIGINT NOT NULL DEFAULT 0;
