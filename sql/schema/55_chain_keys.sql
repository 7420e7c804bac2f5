-- The keys of the timeline's chain (docs/dba.md, "The keyed chain"). Each event's hash is
-- HMAC-SHA-256(key, prev_hash and the event); what is stored is the key already padded
-- and xored with HMAC's inner and outer pads (RFC 2104), so the hot path is two calls of
-- the builtin sha256() with no byte loop and no pgcrypto:
--   hash = sha256(k_opad || sha256(k_ipad || message)).
-- Only the owner reads this table: the functions that sign and verify are SECURITY
-- DEFINER and never return a MAC of data the caller chose (warden.event_hash is owner
-- only), so a role that can insert timeline rows cannot make a chain that verifies.
-- One key is active (retired_at IS NULL); a rotation retires it and adds the next one,
-- and every event keeps the key_id that signed it, so old events still verify.
CREATE TABLE warden.chain_keys (
    key_id     integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    k_ipad     bytea       NOT NULL CHECK (octet_length(k_ipad) = 64),
    k_opad     bytea       NOT NULL CHECK (octet_length(k_opad) = 64),
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE UNIQUE INDEX chain_keys_one_active ON warden.chain_keys ((true)) WHERE retired_at IS NULL;
REVOKE ALL ON warden.chain_keys FROM PUBLIC;
