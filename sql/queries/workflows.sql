-- name: workflow_insert :one
-- Stores one workflow version; returns nothing if (tenant, id, version) already exists.
INSERT INTO warden.workflows
    (tenant_id, workflow_id, version, version_major, version_minor, version_patch, version_pre,
     name, definition, digest, source, created_by)
VALUES (%(tenant_id)s, %(workflow_id)s, %(version)s, %(major)s, %(minor)s, %(patch)s, %(pre)s,
        %(name)s, %(definition)s, %(digest)s, %(source)s, %(created_by)s)
ON CONFLICT (tenant_id, workflow_id, version) DO NOTHING
RETURNING *;

-- name: workflow_get :one
-- One stored version.
SELECT * FROM warden.workflows
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s AND version = %(version)s;

-- name: workflow_latest :one
-- The highest semver version of a workflow (a release sorts above its prereleases).
-- Uses index workflows_latest.
SELECT * FROM warden.workflows
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s
 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
          version_pre IS NULL DESC, version_pre DESC
 LIMIT 1;

-- name: workflow_versions :many
-- Every version of one workflow, newest first.
SELECT * FROM warden.workflows
 WHERE tenant_id = %(tenant_id)s AND workflow_id = %(workflow_id)s
 ORDER BY version_major DESC, version_minor DESC, version_patch DESC,
          version_pre IS NULL DESC, version_pre DESC;

-- name: workflow_list_latest :many
-- The newest version of each workflow of a tenant, by id.
SELECT DISTINCT ON (workflow_id) * FROM warden.workflows
 WHERE tenant_id = %(tenant_id)s
 ORDER BY workflow_id, version_major DESC, version_minor DESC, version_patch DESC,
          version_pre IS NULL DESC, version_pre DESC;
