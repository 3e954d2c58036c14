-- no-transaction
ALTER TABLE orders ADD COLUMN IF NOT EXISTS rejection_reason TEXT;
