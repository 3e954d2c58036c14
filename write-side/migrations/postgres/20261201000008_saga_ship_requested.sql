-- no-transaction
-- The order's shipment reached its saga.
ALTER TABLE sagas ADD COLUMN IF NOT EXISTS ship_requested BIGINT NOT NULL DEFAULT 0;
