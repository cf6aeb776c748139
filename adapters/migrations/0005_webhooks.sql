-- Webhook endpoints: where a merchant is told of outcomes. The signing secret is sealed under
-- the master keyring (the service must sign with it, so it cannot be a hash); after a
-- rotation the previous one signs too until previous_until.
CREATE TABLE webhook_endpoints (
    endpoint_id     uuid        PRIMARY KEY,
    merchant_id     text        NOT NULL,
    url             text        NOT NULL,
    events          text[]      NOT NULL CHECK (cardinality(events) > 0),
    secret          bytea       NOT NULL,
    previous_secret bytea,
    previous_until  timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id) WHERE enabled;
