-- name: gates_seed_runs :exec
-- The claim bench's seeding (bench/claim_gates.py): superuser only, rows written straight
-- into a throwaway database, as no engine path would.
-- Runs already running, each with `steps` job steps dispatched on `topic`; every job
-- carries the concurrency gate given ('' = none).
WITH r AS (
    INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, status, request_digest,
                             created_by, started_at, needs_scheduling)
    SELECT %(tenant)s, 'bench-gates', '1.0.0', 'running', 'bench', 'bench', now(), false
      FROM generate_series(1, %(runs)s)
    RETURNING tenant_id, run_id
), s AS (
    INSERT INTO warden.steps (tenant_id, run_id, step_id, type, status, topic, attempts,
                              started_at)
    SELECT r.tenant_id, r.run_id, 's' || i, 'job', 'running', %(topic)s, 1, now()
      FROM r, generate_series(1, %(steps)s) AS i
    RETURNING tenant_id, run_id, step_id
)
INSERT INTO warden.jobs (tenant_id, job_id, run_id, step_id, attempt, topic, status,
                         priority, available_at, concurrency_key, concurrency_limit)
SELECT s.tenant_id, s.run_id::text || ':' || s.step_id || '@1', s.run_id, s.step_id, 1,
       %(topic)s, 'pending', 55, now() - interval '1 minute', %(key)s,
       CASE WHEN %(key)s <> '' THEN %(limit)s::integer END
  FROM s;

-- name: gates_claim :many
SELECT job_id, lease_token FROM warden.claim_jobs(%(topics)s, %(worker)s, %(max_jobs)s,
                                                  interval '5 minutes');

-- name: gates_complete :exec
SELECT warden.complete_jobs(%(job_ids)s, %(tokens)s, %(results)s);

-- name: gates_workflow :exec
-- The workflow the seeded runs point at (the runs' foreign key).
INSERT INTO warden.workflows (tenant_id, workflow_id, version, version_major, version_minor,
                              version_patch, name, definition, digest, source, created_by)
VALUES (%(tenant)s, 'bench-gates', '1.0.0', 1, 0, 0, 'bench', '{}', 'bench', '', 'bench')
ON CONFLICT DO NOTHING;

-- name: gates_analyze :exec
ANALYZE warden.jobs;

-- name: gates_create_database :exec
CREATE DATABASE {db};

-- name: gates_drop_database :exec
DROP DATABASE IF EXISTS {db} WITH (FORCE);

-- name: gates_grant :exec
-- The bench's login role may claim every topic of every tenant (warden.worker_grants).
INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, granted_by)
VALUES (session_user, '*', '*', 'bench')
ON CONFLICT DO NOTHING;
