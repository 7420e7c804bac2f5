"""Webhook delivery: a notification's delivery state, attempts and the due-rows index.

Revision ID: 0008_webhook_delivery
Revises: 0007_batched_completion
Create Date: 2026-12-02

Frozen. The notifier (engine/daemons/notifier.py) leases due rows with SKIP LOCKED, POSTs outside
any transaction and records the outcome fenced by ``attempts``; these columns are that
state, readable by DBAs. A notification without a webhook is delivered when written (the
outbox row is its delivery), as before.
"""

from alembic import op

revision = "0008_webhook_delivery"
down_revision = "0007_batched_completion"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TYPE warden.notification_status AS ENUM ('pending', 'delivering', 'delivered', 'failed');

ALTER TABLE warden.notifications
    ADD COLUMN status           warden.notification_status,
    -- POSTs begun (each claim counts one, even when its notifier died before an answer)
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
    -- pending: when the next attempt is due; delivering: when the lease ends and another
    -- notifier may take the row over (its holder died mid-POST). NULL once final.
    ADD COLUMN next_attempt_at  timestamptz,
    ADD COLUMN last_attempt_at  timestamptz,
    -- the HTTP status of the last answer; NULL when there was none (timeout, refused, ...)
    ADD COLUMN last_status_code integer,
    ADD COLUMN last_error       text,
    ADD COLUMN failed_at        timestamptz;

UPDATE warden.notifications
   SET delivered_at = coalesce(delivered_at, CASE WHEN webhook IS NULL THEN created_at END);
UPDATE warden.notifications
   SET status = CASE WHEN delivered_at IS NULL THEN 'pending' ELSE 'delivered' END
               ::warden.notification_status,
       next_attempt_at = CASE WHEN delivered_at IS NULL THEN now() END;

ALTER TABLE warden.notifications
    ALTER COLUMN status SET NOT NULL,
    ADD CONSTRAINT notifications_webhook_is_http CHECK (webhook ~* '^https?://'),
    ADD CONSTRAINT notifications_attempts_check CHECK (attempts >= 0),
    ADD CONSTRAINT notifications_last_status_code_check
        CHECK (last_status_code BETWEEN 100 AND 599),
    ADD CONSTRAINT notifications_delivered_iff_at
        CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)),
    ADD CONSTRAINT notifications_failed_iff_at
        CHECK ((status = 'failed') = (failed_at IS NOT NULL)),
    ADD CONSTRAINT notifications_open_iff_due
        CHECK ((status IN ('pending', 'delivering')) = (next_attempt_at IS NOT NULL)),
    ADD CONSTRAINT notifications_only_webhooks_wait
        CHECK (status = 'delivered' OR webhook IS NOT NULL);

-- The notifier's claim: open rows by due time (pending retries and expired leases alike).
-- Delivered and failed rows, nearly all of the table, stay out of it.
DROP INDEX warden.notifications_undelivered;
CREATE INDEX notifications_due ON warden.notifications (next_attempt_at)
    WHERE status IN ('pending', 'delivering');
"""

DOWNGRADE = r"""
DROP INDEX warden.notifications_due;
CREATE INDEX notifications_undelivered ON warden.notifications (created_at)
    WHERE delivered_at IS NULL AND webhook IS NOT NULL;
ALTER TABLE warden.notifications
    DROP CONSTRAINT notifications_webhook_is_http,
    DROP COLUMN failed_at,
    DROP COLUMN last_error,
    DROP COLUMN last_status_code,
    DROP COLUMN last_attempt_at,
    DROP COLUMN next_attempt_at,
    DROP COLUMN attempts,
    DROP COLUMN status;
DROP TYPE warden.notification_status;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
