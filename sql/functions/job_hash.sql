-- The job hash an approval is bound to, as engine/governance/decisions.py job_hash
-- computes it: sha256 of the canonical {tenant_id, run_id, step_id, topic, input,
-- upstream, constraints}. The evidence views recompute it from what is stored to tell
-- whether what ran is what was approved.
CREATE OR REPLACE FUNCTION warden.job_hash(
    p_tenant text, p_run uuid, p_step text, p_topic text, p_input jsonb, p_upstream jsonb,
    p_constraints jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(warden.canonical_json(jsonb_build_object(
        'tenant_id', p_tenant, 'run_id', p_run::text, 'step_id', p_step, 'topic', p_topic,
        'input', p_input, 'upstream', p_upstream, 'constraints', p_constraints)), 'UTF8')), 'hex')
$$;
