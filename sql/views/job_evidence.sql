-- One row per job attempt (docs/dba.md, "Evidence views"): the run, the policy decisions
-- that let it run (the step's submit decision and every dispatch decision about this
-- attempt: stage, snapshot hash, rule, decision, reason, constraints), the approval that
-- released it (a policy approval of this attempt, else an approved approval step it
-- depends on: who, when, why, the job hash approved and whether it matches what ran), the
-- worker, the outcome and the seqs of its timeline events. Read it by (tenant_id, run_id),
-- (tenant_id, job_id) or (tenant_id, created_at). The timeline and decisions are read in
-- the run's partition alone (run_created_at = the run's created_at).
CREATE OR REPLACE VIEW warden.job_evidence AS
SELECT j.tenant_id, j.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, j.step_id, j.job_id, j.attempt, j.topic,
       j.status AS outcome, j.worker, j.created_at, j.started_at, j.finished_at, j.result,
       j.error, j.policy_snapshot_hash, j.constraints, d.decisions,
       ap.approval_id, ap.kind AS approval_kind, ap.decided_by AS approved_by,
       ap.decided_at AS approved_at, ap.reason AS approval_reason, ap.approved_job_hash,
       ap.policy_snapshot_hash AS approval_snapshot_hash,
       ap.job_hash_matches AS approval_matches_what_ran,
       tl.seqs AS timeline_seqs
  FROM warden.jobs j
  JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
  JOIN warden.steps s ON s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                     AND s.step_id = j.step_id
  LEFT JOIN LATERAL (
      SELECT jsonb_agg(jsonb_build_object(
                 'stage', pd.stage, 'snapshot_hash', pd.snapshot_hash, 'rule', pd.rule,
                 'decision', pd.decision, 'reason', pd.reason, 'constraints', pd.constraints,
                 'at', pd.at) ORDER BY pd.decision_id) AS decisions
        FROM warden.policy_decisions pd
       WHERE pd.tenant_id = j.tenant_id AND pd.run_id = j.run_id AND pd.step_id = j.step_id
         AND pd.run_created_at = r.created_at
         AND (pd.job_id = j.job_id OR pd.stage = 'submit')) d ON true
  LEFT JOIN LATERAL (
      SELECT ae.approval_id, ae.kind, ae.decided_by, ae.decided_at, ae.reason,
             ae.approved_job_hash, ae.policy_snapshot_hash, ae.job_hash_matches
        FROM warden.approval_evidence ae
       WHERE ae.tenant_id = j.tenant_id AND ae.run_id = j.run_id AND ae.status = 'approved'
         AND (ae.job_id = j.job_id OR (ae.kind = 'step' AND ae.step_id = ANY (s.depends_on)))
       ORDER BY ae.kind = 'policy' DESC, ae.decided_at DESC
       LIMIT 1) ap ON true
  LEFT JOIN LATERAL (
      SELECT array_agg(t.seq ORDER BY t.seq) AS seqs FROM warden.timeline t
       WHERE t.tenant_id = j.tenant_id AND t.job_id = j.job_id
         AND t.run_created_at = r.created_at) tl ON true;
