-- One row per approval, with its full context (docs/dba.md, "Evidence views"): the run
-- and who started it, who asked and who decided, when and why, the policy snapshot it is
-- bound to and who activated that snapshot, the job hash approved and the hash of what is
-- stored now (job_hash_matches: what ran, or will run, is what was approved), and the
-- timeline seqs of its request and its decision. Read it by (tenant_id, run_id) or
-- (tenant_id, requested_at); every lookup below is by a primary key or an index.
CREATE OR REPLACE VIEW warden.approval_evidence AS
SELECT a.tenant_id, a.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, a.approval_id, a.step_id, a.job_id, a.kind, a.status,
       a.requested_by, a.requested_at, a.expires_at, a.decided_by, a.decided_at, a.reason,
       a.policy_snapshot_hash, act.activated_by AS policy_activated_by,
       act.activated_at AS policy_activated_at,
       a.job_hash AS approved_job_hash, now_hash.job_hash AS current_job_hash,
       a.job_hash = now_hash.job_hash AS job_hash_matches,
       seqs.requested_seq, seqs.decided_seq
  FROM warden.approvals a
  JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = a.run_id
  -- the activation that made the bound snapshot active, the last one before the request
  LEFT JOIN LATERAL (
      SELECT pa.activated_by, pa.activated_at FROM warden.policy_activations pa
       WHERE pa.tenant_id = a.tenant_id AND pa.snapshot_hash = a.policy_snapshot_hash
         AND pa.activated_at <= a.requested_at
       ORDER BY pa.activation_id DESC LIMIT 1) act ON true
  -- the hash of what is stored now, computed as the approval's was: a policy approval is
  -- bound to its job row; a step approval to the run input and its dependencies' outputs
  LEFT JOIN LATERAL (
      SELECT CASE WHEN a.kind = 'policy' THEN (
                 SELECT warden.job_hash(j.tenant_id, j.run_id, j.step_id, j.topic, j.input,
                                        j.upstream, j.constraints)
                   FROM warden.jobs j WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id)
             ELSE (
                 SELECT warden.job_hash(a.tenant_id, a.run_id, a.step_id, NULL, r.input,
                                        coalesce(jsonb_object_agg(d.step_id, d.output), '{}'),
                                        '{}')
                   FROM warden.steps s
                   JOIN warden.steps d ON d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                      AND d.step_id = ANY (s.depends_on)
                  WHERE s.tenant_id = a.tenant_id AND s.run_id = a.run_id
                    AND s.step_id = a.step_id)
             END AS job_hash) now_hash ON true
  LEFT JOIN LATERAL (
      SELECT min(t.seq) FILTER (WHERE t.kind = 'approval.requested') AS requested_seq,
             min(t.seq) FILTER (WHERE t.kind <> 'approval.requested') AS decided_seq
        FROM warden.timeline t
       WHERE t.tenant_id = a.tenant_id AND t.run_id = a.run_id
         AND t.run_created_at = r.created_at
         AND t.kind IN ('approval.requested', 'approval.approved', 'approval.rejected',
                        'approval.expired', 'approval.superseded')
         AND t.data->>'approval_id' = a.approval_id::text) seqs ON true;
