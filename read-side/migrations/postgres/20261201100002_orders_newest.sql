-- no-transaction
-- Newest-first pages, overall, per customer and per status.
CREATE INDEX IF NOT EXISTS orders_newest ON orders (placed_at, order_id);
