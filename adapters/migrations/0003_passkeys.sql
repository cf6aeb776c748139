-- Passkeys, the possession factor: a user's registered WebAuthn credentials. The
-- public key and the sign count are not secrets; deleting the enrollment deletes them.
CREATE TABLE passkeys (
    user_id       uuid        NOT NULL REFERENCES wrapped_keys (user_id) ON DELETE CASCADE,
    credential_id bytea       NOT NULL CHECK (octet_length(credential_id) BETWEEN 1 AND 1023),
    public_key    bytea       NOT NULL,
    sign_count    bigint      NOT NULL CHECK (sign_count >= 0),
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (user_id, credential_id)
);
-- A credential belongs to one user (an authenticator makes a fresh id per registration).
CREATE UNIQUE INDEX passkeys_credential ON passkeys (credential_id);
