-- The order's shipment reached its saga (set in the shipment's own transaction).
ALTER TABLE sagas ADD COLUMN ship_requested BIGINT NOT NULL DEFAULT 0;
