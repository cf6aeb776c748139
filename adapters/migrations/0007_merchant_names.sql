-- What a payer reads as the payee: a merchant's display name, set by an operator
-- (zeropay-server merchants name MERCHANT_ID NAME). A merchant without one is shown its id.
CREATE TABLE merchant_names (
    merchant_id  text PRIMARY KEY,
    display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 100)
);
