-- The chained hash of one timeline event: HMAC-SHA-256 under chain key p_key_id of
-- warden.event_message (sql/schema/55_chain_keys.sql says why two sha256 calls are HMAC).
-- NULL for an unknown key. Owner only: called by anyone else it would be a MAC oracle,
-- and a writer could forge a chain that verifies.
CREATE OR REPLACE FUNCTION warden.event_hash(
    p_key_id integer, prev_hash text, tenant_id text, run_id uuid, seq bigint,
    at timestamptz, kind warden.timeline_kind, step_id text, job_id text, attempt integer,
    actor text, data jsonb
) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
               prev_hash, tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor,
               data))), 'hex')
      FROM warden.chain_keys k WHERE k.key_id = p_key_id
$$;
REVOKE EXECUTE ON FUNCTION warden.event_hash(integer, text, text, uuid, bigint, timestamptz,
    warden.timeline_kind, text, text, integer, text, jsonb) FROM PUBLIC;
