-- no-transaction
-- The catalog with stock. The CHECK is the stock invariant.
CREATE TABLE IF NOT EXISTS products (
    sku          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    price_cents  BIGINT NOT NULL,
    on_hand      BIGINT NOT NULL,
    reserved     BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    added_at     BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    CONSTRAINT products_stock CHECK (reserved >= 0 AND reserved <= on_hand)
);
