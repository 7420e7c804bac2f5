-- Events from the outside world (docs/workflows.md#events): what `wait_event` steps wait
-- for. Written only by warden.send_event (the API, `warden events send` and SQL clients
-- all go through it), which makes a repeated event_id one event, keeps each event until
-- expires_at for a wait that has not begun yet, and wakes the runs already waiting.
--
-- An event is a fact about its (name, key), not a message to one reader: it satisfies
-- every wait on its name and key that begins before it expires, or was waiting when it
-- came. What consumed it is recorded where the consumption happened (the waiting step's
-- wait.matched event), never here, so a later consumer — runs started by events, once per
-- event and workflow — can keep its own ledger keyed by (tenant_id, event_id, workflow_id)
-- without contending with this row.
CREATE TABLE warden.events (
    tenant_id   text        NOT NULL,
    event_id    text        NOT NULL CONSTRAINT events_id_length
                                CHECK (length(event_id) BETWEEN 1 AND 200),
    name        text        NOT NULL CONSTRAINT events_name_format
                                CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    key         text        NOT NULL CONSTRAINT events_key_length CHECK (length(key) <= 512),
    data        jsonb       NOT NULL DEFAULT 'null',
    -- sha256 of the canonical {name, key, data}: the same id with another digest is a
    -- conflict, with the same digest a replay
    digest      text        NOT NULL,
    sent_by     text        NOT NULL,
    received_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    CONSTRAINT events_data_size CHECK (octet_length(data::text) <= 262144),
    CONSTRAINT events_expire_after_receipt CHECK (expires_at >= received_at)
);
-- A wait's match: the oldest kept event of its name and key.
CREATE INDEX events_by_key ON warden.events (tenant_id, name, key, received_at);
