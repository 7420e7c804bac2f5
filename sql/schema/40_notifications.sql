-- The outbox of notify steps, and each webhook's delivery state (engine/daemons/notifier.py
-- leases due rows with SKIP LOCKED, POSTs outside any transaction and records the outcome
-- fenced by `attempts`). A notification without a webhook is delivered when written: the
-- outbox row is its delivery.
CREATE TABLE warden.notifications (
    tenant_id        text                       NOT NULL,
    notification_id  uuid                       NOT NULL DEFAULT gen_random_uuid(),
    run_id           uuid                       NOT NULL,
    step_id          text                       NOT NULL,
    message          text,
    webhook          text,
    payload          jsonb                      NOT NULL DEFAULT '{}',
    created_at       timestamptz                NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    status           warden.notification_status NOT NULL,
    -- POSTs begun (each claim counts one, even when its notifier died before an answer)
    attempts         integer                    NOT NULL DEFAULT 0,
    -- pending: when the next attempt is due; delivering: when the lease ends and another
    -- notifier may take the row over (its holder died mid-POST). NULL once final.
    next_attempt_at  timestamptz,
    last_attempt_at  timestamptz,
    -- the HTTP status of the last answer; NULL when there was none (timeout, refused, ...)
    last_status_code integer,
    last_error       text,
    failed_at        timestamptz,
    PRIMARY KEY (tenant_id, notification_id),
    CONSTRAINT notifications_once_per_step UNIQUE (tenant_id, run_id, step_id),
    FOREIGN KEY (tenant_id, run_id, step_id) REFERENCES warden.steps (tenant_id, run_id, step_id),
    CONSTRAINT notifications_webhook_is_http CHECK (webhook ~* '^https?://'),
    CONSTRAINT notifications_attempts_check CHECK (attempts >= 0),
    CONSTRAINT notifications_last_status_code_check CHECK (last_status_code BETWEEN 100 AND 599),
    CONSTRAINT notifications_delivered_iff_at
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)),
    CONSTRAINT notifications_failed_iff_at CHECK ((status = 'failed') = (failed_at IS NOT NULL)),
    CONSTRAINT notifications_open_iff_due
        CHECK ((status IN ('pending', 'delivering')) = (next_attempt_at IS NOT NULL)),
    CONSTRAINT notifications_only_webhooks_wait CHECK (status = 'delivered' OR webhook IS NOT NULL)
);
-- The notifier's claim: open rows by due time (pending retries and expired leases alike).
-- Delivered and failed rows, nearly all of the table, stay out of it.
CREATE INDEX notifications_due ON warden.notifications (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
