-- no-transaction
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, placed_at, order_id);
