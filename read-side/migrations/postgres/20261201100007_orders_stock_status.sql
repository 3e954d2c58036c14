-- no-transaction
ALTER TABLE orders ADD COLUMN IF NOT EXISTS stock_status TEXT NOT NULL DEFAULT 'NONE';
