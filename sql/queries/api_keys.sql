-- name: api_key_insert :one
-- Stores a new key (its secret only as an HMAC).
INSERT INTO warden.api_keys (key_id, name, roles, tenants, secret_hmac, created_by)
VALUES (%(key_id)s, %(name)s, %(roles)s::warden.api_role[], %(tenants)s, %(secret_hmac)s,
        %(created_by)s)
RETURNING key_id, name, roles::text[] AS roles, tenants, secret_hmac, created_by, created_at,
          revoked_at, last_used_at;

-- name: api_key_get :one
-- One key by its public id (revoked ones too: the caller decides).
SELECT key_id, name, roles::text[] AS roles, tenants, secret_hmac, created_by, created_at,
       revoked_at, last_used_at
  FROM warden.api_keys WHERE key_id = %(key_id)s;

-- name: api_keys_list :many
-- Every key, newest first.
SELECT key_id, name, roles::text[] AS roles, tenants, secret_hmac, created_by, created_at,
       revoked_at, last_used_at
  FROM warden.api_keys ORDER BY created_at DESC;

-- name: api_key_revoke :one
-- Revokes a key (once); no row = unknown or already revoked.
UPDATE warden.api_keys SET revoked_at = now()
 WHERE key_id = %(key_id)s AND revoked_at IS NULL
RETURNING key_id, name, roles::text[] AS roles, tenants, secret_hmac, created_by, created_at,
          revoked_at, last_used_at;

-- name: api_key_touch :exec
-- Records use, at most once a minute per key (keeps the hot path from writing each call).
UPDATE warden.api_keys SET last_used_at = now()
 WHERE key_id = %(key_id)s
   AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute');
