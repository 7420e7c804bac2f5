-- Every timeline event with what is wrong with it, if anything (problem IS NULL: it
-- holds): seq gapless from 1, prev_hash links to the previous event's hash, and hash
-- recomputes as the HMAC under the key that signed it. The window is partitioned by run,
-- so a WHERE on tenant_id and run_id is pushed down to the primary key. Owner only (it
-- reads the chain keys); others ask warden.timeline_problems or warden.verify_timeline.
CREATE OR REPLACE VIEW warden.timeline_check AS
SELECT t.tenant_id, t.run_id, t.seq, t.key_id, t.hash,
       CASE
           WHEN t.seq <> row_number() OVER w
               THEN 'seq ' || t.seq || ' found where ' || row_number() OVER w
                    || ' was expected (an event is missing)'
           WHEN t.prev_hash <> coalesce(lag(t.hash) OVER w, repeat('0', 64))
               THEN 'prev_hash does not link to the previous event''s hash'
           WHEN k.key_id IS NULL
               THEN 'signed with key ' || t.key_id || ', which does not exist'
           WHEN t.hash <> encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
                    t.prev_hash, t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id,
                    t.job_id, t.attempt, t.actor, t.data))), 'hex')
               THEN 'hash does not match the event under key ' || t.key_id
                    || ' (the event was changed, or not signed with the chain key)'
       END AS problem
  FROM warden.timeline t
  LEFT JOIN warden.chain_keys k ON k.key_id = t.key_id
WINDOW w AS (PARTITION BY t.tenant_id, t.run_id ORDER BY t.seq);
REVOKE ALL ON warden.timeline_check FROM PUBLIC;
