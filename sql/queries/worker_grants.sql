-- name: worker_grant_insert :one
-- Lets a login role claim a tenant's jobs of the topics a glob matches (role NULL: the
-- session's own login role). Granting what is already granted changes nothing.
INSERT INTO warden.worker_grants (role_name, tenant_id, topic_glob, granted_by)
VALUES (coalesce(%(role)s, session_user::text), %(tenant_id)s, %(topic_glob)s, %(granted_by)s)
ON CONFLICT (role_name, tenant_id, topic_glob) DO UPDATE SET role_name = excluded.role_name
RETURNING *;

-- name: worker_grant_delete :many
-- Takes a grant back; from then on the role's claims, heartbeats and completions of those
-- jobs are refused: the leases it held under that grant alone end at once, and the reaper
-- retries those attempts (warden.end_ungranted_leases).
DELETE FROM warden.worker_grants
 WHERE role_name = %(role)s AND tenant_id = %(tenant_id)s AND topic_glob = %(topic_glob)s
RETURNING *;

-- name: worker_grants_list :many
-- Every grant, by role, tenant and topic glob.
SELECT * FROM warden.worker_grants
 WHERE %(role)s::text IS NULL OR role_name = %(role)s::text
 ORDER BY role_name, tenant_id, topic_glob;
