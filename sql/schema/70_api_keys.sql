-- API keys: only an HMAC of each secret is stored; a key is granted roles and tenants.
CREATE TABLE warden.api_keys (
    -- the public half of a key (shown in lists and logs); the secret half is never stored
    key_id       text            NOT NULL PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    -- the principal the key acts as (recorded as actor, compared for self-approval)
    name         text            NOT NULL
        CONSTRAINT api_keys_name_unique UNIQUE
        CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    roles        warden.api_role[] NOT NULL CHECK (cardinality(roles) >= 1),
    tenants      text[]          NOT NULL CHECK (cardinality(tenants) >= 1),
    -- HMAC-SHA256(server secret, key secret), hex
    secret_hmac  text            NOT NULL CHECK (secret_hmac ~ '^[0-9a-f]{64}$'),
    created_by   text            NOT NULL,
    created_at   timestamptz     NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
