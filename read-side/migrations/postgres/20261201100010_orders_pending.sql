-- Orders now start PENDING, until the saga confirms or rejects them. Data
-- only (no DDL), so it runs in one transaction with its bookkeeping row, and
-- running it again changes nothing.
UPDATE orders SET status = 'PENDING' WHERE status = 'PLACED';
