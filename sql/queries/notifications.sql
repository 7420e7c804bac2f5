-- name: notification_insert :one
-- Writes a notify step's message to the outbox (once per step). Without a webhook the
-- outbox row is the delivery; with one, it is due for the notifier at once.
INSERT INTO warden.notifications (tenant_id, run_id, step_id, message, webhook, payload,
                                  delivered_at, status, next_attempt_at)
VALUES (%(tenant_id)s, %(run_id)s, %(step_id)s, %(message)s, %(webhook)s, %(payload)s,
        CASE WHEN %(webhook)s::text IS NULL THEN warden.now() END,
        CASE WHEN %(webhook)s::text IS NULL THEN 'delivered'
             ELSE 'pending' END::warden.notification_status,
        CASE WHEN %(webhook)s::text IS NOT NULL THEN warden.now() END)
RETURNING *;

-- name: notification_announce :exec
-- Tells listeners a notification exists (its id only).
SELECT pg_notify('warden_notifications', %(notification_id)s::text);

-- name: notifications_claim :many
-- Leases up to `limit` due deliveries that have an attempt left: pending rows whose next
-- attempt has come, and delivering rows whose lease ended (their notifier died mid-POST,
-- so the webhook is posted again: at-least-once). SKIP LOCKED lets concurrent notifiers
-- take disjoint rows in this short transaction; after its commit the lease
-- (next_attempt_at in the future) keeps the row from them until the outcome is recorded.
-- Each claim counts an attempt, which fences the outcome. Uses notifications_due.
WITH due AS (
    SELECT tenant_id, notification_id FROM warden.notifications
     WHERE status IN ('pending', 'delivering') AND next_attempt_at <= warden.now()
       AND attempts < %(max_attempts)s
     ORDER BY next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE warden.notifications n
   SET status = 'delivering', attempts = n.attempts + 1, last_attempt_at = warden.now(),
       next_attempt_at = warden.now() + %(lease)s
  FROM due
 WHERE n.tenant_id = due.tenant_id AND n.notification_id = due.notification_id
RETURNING n.*;

-- name: notifications_give_up_exhausted :many
-- Fails due deliveries with no attempt left: a last attempt whose notifier died mid-POST
-- (its outcome is unknown), or rows left over after the attempt limit was lowered.
-- Same rows and lock discipline as notifications_claim.
WITH exhausted AS (
    SELECT tenant_id, notification_id FROM warden.notifications
     WHERE status IN ('pending', 'delivering') AND next_attempt_at <= warden.now()
       AND attempts >= %(max_attempts)s
     ORDER BY next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
)
UPDATE warden.notifications n
   SET status = 'failed', failed_at = warden.now(), next_attempt_at = NULL,
       last_error = CASE WHEN n.status = 'delivering'
                         THEN 'the notifier stopped during the last attempt; '
                              'its outcome is unknown'
                         ELSE n.last_error END
  FROM exhausted
 WHERE n.tenant_id = exhausted.tenant_id AND n.notification_id = exhausted.notification_id
RETURNING n.*;

-- name: notification_delivered :one
-- Records a 2xx answer to attempt `attempt`. Fenced: no row back when that attempt no
-- longer holds the row (its lease ended and another notifier took it over).
UPDATE warden.notifications
   SET status = 'delivered', delivered_at = warden.now(), next_attempt_at = NULL,
       last_status_code = %(status_code)s::integer, last_error = NULL
 WHERE tenant_id = %(tenant_id)s AND notification_id = %(notification_id)s
   AND status = 'delivering' AND attempts = %(attempt)s
RETURNING *;

-- name: notification_attempt_failed :one
-- Records a failed attempt (fenced like notification_delivered). give_up: failed for
-- good. Otherwise pending again after backoff_s * 2^(attempts-1), capped at
-- max_backoff_s, plus up to `jitter` of it (it only adds: no retry comes earlier than
-- the backoff), and no earlier than the receiver's Retry-After (capped the same way).
-- Database time only, like every lease and backoff in Warden.
UPDATE warden.notifications
   SET status = CASE WHEN %(give_up)s THEN 'failed'
                     ELSE 'pending' END::warden.notification_status,
       failed_at = CASE WHEN %(give_up)s THEN warden.now() END,
       next_attempt_at = CASE WHEN NOT %(give_up)s THEN warden.now() + make_interval(secs => least(
           greatest(least(%(backoff_s)s::float8 * power(2, attempts - 1),
                          %(max_backoff_s)s::float8) * (1 + %(jitter)s::float8 * random()),
                    coalesce(%(retry_after_s)s::float8, 0)),
           %(max_backoff_s)s::float8 * (1 + %(jitter)s::float8))) END,
       last_status_code = %(status_code)s::integer, last_error = %(error)s
 WHERE tenant_id = %(tenant_id)s AND notification_id = %(notification_id)s
   AND status = 'delivering' AND attempts = %(attempt)s
RETURNING *;
