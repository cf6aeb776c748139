-- Merchant API keys: only a SHA-256 hash of each key is stored; a key is shown
-- once, when it is issued. A revoked key stays listed (who had it, when it ended).
CREATE TABLE merchant_keys (
    key_id      text PRIMARY KEY,
    merchant_id text NOT NULL,
    key_hash    bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX merchant_keys_merchant ON merchant_keys (merchant_id);
