-- The chained hash of one timeline event. Times enter as epoch microseconds so the hash
-- does not depend on the session's TimeZone or DateStyle; jsonb's text form is canonical.
CREATE OR REPLACE FUNCTION warden.event_hash(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')), 'hex')
$$;
