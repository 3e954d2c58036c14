-- no-transaction
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id, placed_at, order_id);
