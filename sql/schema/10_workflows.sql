-- Stored workflow definitions: a (tenant, id, version) is immutable once stored.
CREATE TABLE warden.workflows (
    tenant_id       text        NOT NULL,
    workflow_id     text        NOT NULL,
    version         text        NOT NULL,
    -- semver parts, so "latest" is an index-ordered query rather than a client sort
    version_major   integer     NOT NULL,
    version_minor   integer     NOT NULL,
    version_patch   integer     NOT NULL,
    version_pre     text,
    name            text        NOT NULL,
    definition      jsonb       NOT NULL,
    digest          text        NOT NULL,
    source          text        NOT NULL,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, version)
);
CREATE INDEX workflows_latest ON warden.workflows
    (tenant_id, workflow_id, version_major DESC, version_minor DESC, version_patch DESC);
