-- name: notification_insert :one
-- Writes a notify step's message to the outbox (once per step).
INSERT INTO warden.notifications (tenant_id, run_id, step_id, message, webhook, payload,
                                  delivered_at)
VALUES (%(tenant_id)s, %(run_id)s, %(step_id)s, %(message)s, %(webhook)s, %(payload)s,
        CASE WHEN %(webhook)s::text IS NULL THEN now() END)
RETURNING *;

-- name: notification_announce :exec
-- Tells listeners a notification exists (its id only).
SELECT pg_notify('warden_notifications', %(notification_id)s::text);
