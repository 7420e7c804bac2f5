-- Which login roles may work on which tenants and topics (docs/security.md). claim_jobs
-- hands a role only the jobs its grants cover, and a lease only ever to that role
-- (warden.lease_held); taking a grant back ends the leases it covered at once
-- (warden.end_ungranted_leases): a worker never receives, heartbeats, completes or fails
-- a job of a tenant or topic it is not granted. A role with no grant claims nothing.
-- tenant_id '*' is every tenant; in topic_glob '*' matches any run of characters and '?'
-- one. Written by `warden workers grant|revoke` (or these rows directly) as the owner.
CREATE TABLE warden.worker_grants (
    role_name   text        NOT NULL CHECK (role_name ~ '^[A-Za-z_][A-Za-z0-9_$.@-]{0,62}$'),
    tenant_id   text        NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 255),
    topic_glob  text        NOT NULL CHECK (topic_glob ~ '^[A-Za-z0-9._*?-]{1,255}$'),
    -- topic_glob as the LIKE pattern the claim compares with ('_' is literal in a topic)
    topic_like  text        GENERATED ALWAYS AS (
        replace(replace(replace(topic_glob, '_', '\_'), '*', '%'), '?', '_')) STORED,
    granted_by  text        NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role_name, tenant_id, topic_glob)
);
