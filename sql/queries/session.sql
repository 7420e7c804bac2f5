-- name: session_tenant_scope :exec
-- Sets the session's tenant scope for row-level security (engine/store/scope.py). Session
-- level, not transaction-local: a pooled autocommit connection runs each statement as its
-- own transaction, and the pool sets the scope again whenever the next user's differs.
SELECT set_config('warden.tenant', %(tenant)s, false);

-- name: session_identity :one
-- Who this session is in the database, and whether it may record another principal as
-- the actor of what it does (CLI --as): only a member of the role that owns schema warden,
-- which could rewrite any row anyway (superusers are members of every role).
SELECT current_user::text AS db_role,
       pg_has_role(current_user, n.nspowner, 'MEMBER') AS may_act_for_others
  FROM pg_namespace n WHERE n.nspname = 'warden';

-- name: transaction_generic_plans :exec
-- This transaction's prepared statements run on generic plans (the session default is
-- force_custom_plan: engine/store/connection.py). For the hot transactions only (a
-- scheduler pass, a start): their statements are set-based over key arrays, with one
-- good plan whatever the values, and re-planning each on every execution was ~0.1–0.3 ms
-- of bind per statement, a statement per round trip (bench/README.md).
SELECT set_config('plan_cache_mode', 'force_generic_plan', true);

-- name: session_discard_plans :exec
-- Drops this session's cached plans, its prepared statements' and its PL/pgSQL functions'
-- alike (the statements stay prepared): each is planned again on its next execution, on
-- the tables as they are now (engine/store/connection.py, docs/design.md#plans-that-age).
DISCARD PLANS;
