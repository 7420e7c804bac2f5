-- name: session_tenant_scope :exec
-- Sets the session's tenant scope for row-level security (engine/store/scope.py). Session
-- level, not transaction-local: a pooled autocommit connection runs each statement as its
-- own transaction, and the pool sets the scope again whenever the next user's differs.
SELECT set_config('warden.tenant', %(tenant)s, false);
