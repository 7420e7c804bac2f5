-- One row per policy activation (docs/dba.md, "Evidence views"): who switched a tenant to
-- which snapshot, when, from which, who stored that snapshot, whether the stored bundle
-- still hashes to its name (snapshot_intact), when the next activation replaced it, and
-- whether it is the tenant's active one now.
CREATE OR REPLACE VIEW warden.policy_activation_evidence AS
SELECT pa.tenant_id, pa.activation_id, pa.snapshot_hash, pa.previous_hash, pa.activated_by,
       pa.activated_at, ps.created_by AS snapshot_created_by,
       ps.created_at AS snapshot_created_at, ps.bundle->>'name' AS bundle_name,
       ps.bundle->>'default_decision' AS default_decision,
       jsonb_array_length(coalesce(ps.bundle->'rules', '[]')) AS rules,
       encode(sha256(convert_to(warden.canonical_json(ps.bundle), 'UTF8')), 'hex')
           = pa.snapshot_hash AS snapshot_intact,
       nxt.activated_at AS replaced_at,
       nxt.activated_at IS NULL AND act.snapshot_hash IS NOT DISTINCT FROM pa.snapshot_hash
           AS active_now
  FROM warden.policy_activations pa
  JOIN warden.policy_snapshots ps ON ps.tenant_id = pa.tenant_id
                                 AND ps.snapshot_hash = pa.snapshot_hash
  LEFT JOIN warden.policy_active act ON act.tenant_id = pa.tenant_id
  LEFT JOIN LATERAL (
      SELECT n.activated_at FROM warden.policy_activations n
       WHERE n.tenant_id = pa.tenant_id AND n.activation_id > pa.activation_id
       ORDER BY n.activation_id LIMIT 1) nxt ON true;
