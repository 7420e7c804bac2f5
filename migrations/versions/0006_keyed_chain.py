"""Keyed chain: each timeline event's hash becomes HMAC-SHA-256 under a chain key only
the schema owner reads, and which key signed an event is recorded; evidence views.

Revision ID: 0006_keyed_chain
Revises: 0005_traceparent
Create Date: 2026-12-06

Frozen. Adds warden.chain_keys (the HMAC pads of each key; one active), timeline.key_id,
warden.event_message (the signed bytes), warden.rotate_chain_key, the owner-only keyed
warden.event_hash, the view warden.timeline_check and warden.timeline_problems (what is
wrong with a chain, and where); append_events signs with the active key and
verify_timeline checks with the key of each event. Chains already written are re-signed
under the first key if they verified unkeyed (docs/dba.md, "The keyed chain").
Adds the API role auditor, warden.canonical_json and warden.job_hash (the approval hash,
in SQL) and the views approval_evidence, job_evidence and policy_activation_evidence
(docs/dba.md, "Evidence views").
"""

from alembic import op

revision = "0006_keyed_chain"
down_revision = "0005_traceparent"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
ALTER TYPE warden.api_role ADD VALUE IF NOT EXISTS 'auditor';  -- a downgrade cannot drop it
ALTER TABLE warden.timeline ADD COLUMN key_id integer;

-- The keys of the timeline's chain (docs/dba.md, "The keyed chain"). Each event's hash is
-- HMAC-SHA-256(key, prev_hash and the event); what is stored is the key already padded
-- and xored with HMAC's inner and outer pads (RFC 2104), so the hot path is two calls of
-- the builtin sha256() with no byte loop and no pgcrypto:
--   hash = sha256(k_opad || sha256(k_ipad || message)).
-- Only the owner reads this table: the functions that sign and verify are SECURITY
-- DEFINER and never return a MAC of data the caller chose (warden.event_hash is owner
-- only), so a role that can insert timeline rows cannot make a chain that verifies.
-- One key is active (retired_at IS NULL); a rotation retires it and adds the next one,
-- and every event keeps the key_id that signed it, so old events still verify.
CREATE TABLE warden.chain_keys (
    key_id     integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    k_ipad     bytea       NOT NULL CHECK (octet_length(k_ipad) = 64),
    k_opad     bytea       NOT NULL CHECK (octet_length(k_opad) = 64),
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE UNIQUE INDEX chain_keys_one_active ON warden.chain_keys ((true)) WHERE retired_at IS NULL;
REVOKE ALL ON warden.chain_keys FROM PUBLIC;

-- A deleted chain key would leave every event it signed unverifiable.
CREATE OR REPLACE TRIGGER chain_keys_no_delete BEFORE DELETE ON warden.chain_keys
    FOR EACH ROW EXECUTE FUNCTION warden.refuse_change();
CREATE OR REPLACE TRIGGER chain_keys_no_truncate BEFORE TRUNCATE ON warden.chain_keys
    FOR EACH STATEMENT EXECUTE FUNCTION warden.refuse_change();

-- The bytes a timeline event's hash signs: the previous hash and the event's fields,
-- separated by U+001F. Times enter as epoch microseconds so the text does not depend on
-- the session's TimeZone or DateStyle; jsonb's text form is canonical. Holds no key: any
-- role may call it (engine/runs/evidence.py computes the same bytes offline).
CREATE OR REPLACE FUNCTION warden.event_message(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')
$$;

-- Retires the active chain key and makes a new one; returns its key_id (`warden audit
-- rotate-key`; the first key is made by the migration that added the table). The key is
-- sha256 of four gen_random_uuid() (122 bits each from the server's strong random source,
-- the one pgcrypto's gen_random_bytes uses), so it never leaves the server; only its HMAC
-- pads are stored. The table lock orders concurrent rotations. Owner only.
CREATE OR REPLACE FUNCTION warden.rotate_chain_key(p_by text) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key bytea;
    v_id  integer;
BEGIN
    LOCK TABLE warden.chain_keys IN SHARE ROW EXCLUSIVE MODE;
    v_key := sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                               || gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'))
             || decode(repeat('00', 32), 'hex');
    UPDATE warden.chain_keys SET retired_at = now() WHERE retired_at IS NULL;
    INSERT INTO warden.chain_keys (k_ipad, k_opad, created_by)
    SELECT decode(string_agg(lpad(to_hex(get_byte(v_key, i) # 54), 2, '0'), '' ORDER BY i), 'hex'),
           decode(string_agg(lpad(to_hex(get_byte(v_key, i) # 92), 2, '0'), '' ORDER BY i), 'hex'),
           p_by
      FROM generate_series(0, 63) AS i
    RETURNING key_id INTO v_id;
    RETURN v_id;
END $$;
REVOKE EXECUTE ON FUNCTION warden.rotate_chain_key(text) FROM PUBLIC;

SELECT warden.rotate_chain_key('migration 0003_keyed_chain');

-- Re-sign the chains already written, under the new key, one run at a time in seq order
-- (with the update trigger off for this one statement of the migration). Only a chain that
-- verified under the unkeyed sha256 is re-signed: a broken one keeps its hashes, so it
-- stays broken.
ALTER TABLE warden.timeline DISABLE TRIGGER timeline_no_update_delete;
DO $rechain$
DECLARE
    r      record;
    e      record;
    k      record;
    v_prev text;
    v_hash text;
BEGIN
    SELECT key_id, k_ipad, k_opad INTO k FROM warden.chain_keys WHERE retired_at IS NULL;
    FOR r IN SELECT tenant_id, run_id FROM warden.runs ORDER BY tenant_id, run_id LOOP
        IF warden.verify_timeline(r.run_id) THEN
            v_prev := repeat('0', 64);
            FOR e IN SELECT * FROM warden.timeline
                      WHERE tenant_id = r.tenant_id AND run_id = r.run_id ORDER BY seq LOOP
                v_hash := encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
                              v_prev, e.tenant_id, e.run_id, e.seq, e.at, e.kind, e.step_id,
                              e.job_id, e.attempt, e.actor, e.data))), 'hex');
                UPDATE warden.timeline SET prev_hash = v_prev, hash = v_hash, key_id = k.key_id
                 WHERE tenant_id = e.tenant_id AND run_id = e.run_id AND seq = e.seq;
                v_prev := v_hash;
            END LOOP;
            UPDATE warden.runs SET timeline_hash = v_prev
             WHERE tenant_id = r.tenant_id AND run_id = r.run_id;
        END IF;
    END LOOP;
    UPDATE warden.timeline SET key_id = k.key_id WHERE key_id IS NULL;
END $rechain$;
ALTER TABLE warden.timeline ENABLE TRIGGER timeline_no_update_delete;
ALTER TABLE warden.timeline ALTER COLUMN key_id SET NOT NULL;

DROP FUNCTION warden.verify_timeline(uuid);
DROP FUNCTION warden.event_hash(text, text, uuid, bigint, timestamptz, warden.timeline_kind,
    text, text, integer, text, jsonb);
-- The chained hash of one timeline event: HMAC-SHA-256 under chain key p_key_id of
-- warden.event_message (sql/schema/55_chain_keys.sql says why two sha256 calls are HMAC).
-- NULL for an unknown key. Owner only: called by anyone else it would be a MAC oracle,
-- and a writer could forge a chain that verifies.
CREATE OR REPLACE FUNCTION warden.event_hash(
    p_key_id integer, prev_hash text, tenant_id text, run_id uuid, seq bigint,
    at timestamptz, kind warden.timeline_kind, step_id text, job_id text, attempt integer,
    actor text, data jsonb
) RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(k.k_opad || sha256(k.k_ipad || warden.event_message(
               prev_hash, tenant_id, run_id, seq, at, kind, step_id, job_id, attempt, actor,
               data))), 'hex')
      FROM warden.chain_keys k WHERE k.key_id = p_key_id
$$;
REVOKE EXECUTE ON FUNCTION warden.event_hash(integer, text, text, uuid, bigint, timestamptz,
    warden.timeline_kind, text, text, integer, text, jsonb) FROM PUBLIC;

-- Appends a run's events, in order, and returns the seq of the last one (the head's seq
-- for an empty array). p_events: a JSON array of {kind, step_id, job_id, attempt, actor,
-- data}.
--
-- The run row is locked first (FOR NO KEY UPDATE: it does not block the foreign-key
-- checks of rows that reference the run), so seq is gapless and follows commit order:
-- whoever appends next waits for this transaction and reads the head it leaves. One
-- update of the run's timeline head per call, however many events.
--
-- Each hash is HMAC-SHA-256 under the active chain key (sql/schema/55_chain_keys.sql),
-- inlined as two sha256 calls. SECURITY DEFINER to read the key; it signs only events it
-- appends itself, at the run's next seq after the head, so a caller gets no MAC of a row
-- it could put anywhere else (an existing (run, seq) is refused by the primary key).
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
    v_key  integer;
    v_ipad bytea;
    v_opad bytea;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    SELECT key_id, k_ipad, k_opad INTO v_key, v_ipad, v_opad
      FROM warden.chain_keys WHERE retired_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no active chain key: run `warden audit rotate-key`'
            USING ERRCODE = 'WD500';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := encode(sha256(v_opad || sha256(v_ipad || warden.event_message(
                      v_prev, p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id',
                      e->>'job_id', (e->>'attempt')::integer, e->>'actor',
                      coalesce(e->'data', '{}')))), 'hex');
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash, key_id)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash, v_key);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
-- As SECURITY DEFINER it would let any role append to any run: only the roles that write
-- runs may (their grants: sql/grants/).
REVOKE EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) FROM PUBLIC;

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

-- The first thing wrong with each broken chain: of one run (p_run), or of every run of a
-- tenant (p_tenant) or of all tenants (both NULL). A run is listed once, with the seq and
-- what differs: an event (warden.timeline_check), or the head stored on the run not being
-- the last event (a deleted tail). No row: every chain asked about holds. SECURITY
-- DEFINER (the check reads the chain keys); it returns no hash, so anyone may call it.
-- One run is its own query, with plain equalities on (tenant_id, run_id): PL/pgSQL may
-- reuse a generic plan after a few calls, and only then does it still use the primary key
-- (verify_timeline is called once per run by `WHERE NOT warden.verify_timeline(run_id)`).
CREATE OR REPLACE FUNCTION warden.timeline_problems(p_tenant text, p_run uuid)
RETURNS TABLE (tenant_id text, run_id uuid, seq bigint, problem text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_tenant text;
    v_seq    bigint;
    v_hash   text;
BEGIN
    IF p_run IS NOT NULL THEN
        SELECT r.tenant_id, r.timeline_seq, r.timeline_hash INTO v_tenant, v_seq, v_hash
          FROM warden.runs r
         WHERE r.run_id = p_run AND (p_tenant IS NULL OR r.tenant_id = p_tenant);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
        END IF;
        RETURN QUERY
        SELECT c.tenant_id, c.run_id, c.seq, c.problem FROM warden.timeline_check c
         WHERE c.tenant_id = v_tenant AND c.run_id = p_run AND c.problem IS NOT NULL
         ORDER BY c.seq LIMIT 1;
        IF NOT FOUND THEN
            RETURN QUERY
            SELECT v_tenant, p_run, greatest(v_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || v_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM (SELECT max(t.seq) AS seq FROM warden.timeline t
                     WHERE t.tenant_id = v_tenant AND t.run_id = p_run) m
              LEFT JOIN warden.timeline l
                     ON l.tenant_id = v_tenant AND l.run_id = p_run AND l.seq = m.seq
             WHERE coalesce(l.seq, 0) <> v_seq OR coalesce(l.hash, repeat('0', 64)) <> v_hash;
        END IF;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT DISTINCT ON (x.tenant_id, x.run_id) x.tenant_id, x.run_id, x.seq, x.problem
      FROM (SELECT c.tenant_id, c.run_id, c.seq, c.problem
              FROM warden.timeline_check c
             WHERE c.problem IS NOT NULL AND (p_tenant IS NULL OR c.tenant_id = p_tenant)
            UNION ALL
            SELECT r.tenant_id, r.run_id, greatest(r.timeline_seq, coalesce(l.seq, 0)),
                   'the head stored on the run (seq ' || r.timeline_seq
                   || ') is not the last event (seq ' || coalesce(l.seq, 0) || ')'
              FROM warden.runs r
              LEFT JOIN LATERAL (SELECT t.seq, t.hash FROM warden.timeline t
                                  WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id
                                  ORDER BY t.seq DESC LIMIT 1) l ON true
             WHERE (p_tenant IS NULL OR r.tenant_id = p_tenant)
               AND (coalesce(l.seq, 0) <> r.timeline_seq
                    OR coalesce(l.hash, repeat('0', 64)) <> r.timeline_hash)) x
     ORDER BY x.tenant_id, x.run_id, x.seq;
END $$;

-- True when the run's chain is intact: seq gapless from 1, every prev_hash links, every
-- hash recomputes under the key that signed it, and the head stored on the run matches
-- the last event (so a deleted tail is caught too). warden.timeline_problems says what
-- is wrong.
CREATE OR REPLACE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM warden.timeline_problems(NULL, p_run))
$$;

-- A JSON value's canonical text, as engine/core/canonical.py writes it: object keys sorted
-- by code point (UTF-8 byte order, hence COLLATE "C"), no whitespace, strings escaped as
-- jsonb does (the same escapes as Python's json with ensure_ascii=False). Numbers keep
-- jsonb's text: a number Python would print differently (1e2, which Python reads as
-- 100.0) gives another hash, so a match is proof and a mismatch is worth a look.
CREATE OR REPLACE FUNCTION warden.canonical_json(v jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE jsonb_typeof(v)
        WHEN 'object' THEN '{' || coalesce((
            SELECT string_agg(to_json(e.key)::text || ':' || warden.canonical_json(e.value), ','
                              ORDER BY e.key COLLATE "C")
              FROM jsonb_each(v) AS e), '') || '}'
        WHEN 'array' THEN '[' || coalesce((
            SELECT string_agg(warden.canonical_json(e.value), ',' ORDER BY e.n)
              FROM jsonb_array_elements(v) WITH ORDINALITY AS e(value, n)), '') || ']'
        ELSE v::text
    END
$$;

-- The job hash an approval is bound to, as engine/governance/decisions.py job_hash
-- computes it: sha256 of the canonical {tenant_id, run_id, step_id, topic, input,
-- upstream, constraints}. The evidence views recompute it from what is stored to tell
-- whether what ran is what was approved.
CREATE OR REPLACE FUNCTION warden.job_hash(
    p_tenant text, p_run uuid, p_step text, p_topic text, p_input jsonb, p_upstream jsonb,
    p_constraints jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(warden.canonical_json(jsonb_build_object(
        'tenant_id', p_tenant, 'run_id', p_run::text, 'step_id', p_step, 'topic', p_topic,
        'input', p_input, 'upstream', p_upstream, 'constraints', p_constraints)), 'UTF8')), 'hex')
$$;

-- One row per approval, with its full context (docs/dba.md, "Evidence views"): the run
-- and who started it, who asked and who decided, when and why, the policy snapshot it is
-- bound to and who activated that snapshot, the job hash approved and the hash of what is
-- stored now (job_hash_matches: what ran, or will run, is what was approved), and the
-- timeline seqs of its request and its decision. Read it by (tenant_id, run_id) or
-- (tenant_id, requested_at); every lookup below is by a primary key or an index.
CREATE OR REPLACE VIEW warden.approval_evidence AS
SELECT a.tenant_id, a.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, a.approval_id, a.step_id, a.job_id, a.kind, a.status,
       a.requested_by, a.requested_at, a.expires_at, a.decided_by, a.decided_at, a.reason,
       a.policy_snapshot_hash, act.activated_by AS policy_activated_by,
       act.activated_at AS policy_activated_at,
       a.job_hash AS approved_job_hash, now_hash.job_hash AS current_job_hash,
       a.job_hash = now_hash.job_hash AS job_hash_matches,
       seqs.requested_seq, seqs.decided_seq
  FROM warden.approvals a
  JOIN warden.runs r ON r.tenant_id = a.tenant_id AND r.run_id = a.run_id
  -- the activation that made the bound snapshot active, the last one before the request
  LEFT JOIN LATERAL (
      SELECT pa.activated_by, pa.activated_at FROM warden.policy_activations pa
       WHERE pa.tenant_id = a.tenant_id AND pa.snapshot_hash = a.policy_snapshot_hash
         AND pa.activated_at <= a.requested_at
       ORDER BY pa.activation_id DESC LIMIT 1) act ON true
  -- the hash of what is stored now, computed as the approval's was: a policy approval is
  -- bound to its job row; a step approval to the run input and its dependencies' outputs
  LEFT JOIN LATERAL (
      SELECT CASE WHEN a.kind = 'policy' THEN (
                 SELECT warden.job_hash(j.tenant_id, j.run_id, j.step_id, j.topic, j.input,
                                        j.upstream, j.constraints)
                   FROM warden.jobs j WHERE j.tenant_id = a.tenant_id AND j.job_id = a.job_id)
             ELSE (
                 SELECT warden.job_hash(a.tenant_id, a.run_id, a.step_id, NULL, r.input,
                                        coalesce(jsonb_object_agg(d.step_id, d.output), '{}'),
                                        '{}')
                   FROM warden.steps s
                   JOIN warden.steps d ON d.tenant_id = s.tenant_id AND d.run_id = s.run_id
                                      AND d.step_id = ANY (s.depends_on)
                  WHERE s.tenant_id = a.tenant_id AND s.run_id = a.run_id
                    AND s.step_id = a.step_id)
             END AS job_hash) now_hash ON true
  LEFT JOIN LATERAL (
      SELECT min(t.seq) FILTER (WHERE t.kind = 'approval.requested') AS requested_seq,
             min(t.seq) FILTER (WHERE t.kind <> 'approval.requested') AS decided_seq
        FROM warden.timeline t
       WHERE t.tenant_id = a.tenant_id AND t.run_id = a.run_id
         AND t.kind IN ('approval.requested', 'approval.approved', 'approval.rejected',
                        'approval.expired', 'approval.superseded')
         AND t.data->>'approval_id' = a.approval_id::text) seqs ON true;

-- One row per job attempt (docs/dba.md, "Evidence views"): the run, the policy decisions
-- that let it run (the step's submit decision and every dispatch decision about this
-- attempt: stage, snapshot hash, rule, decision, reason, constraints), the approval that
-- released it (a policy approval of this attempt, else an approved approval step it
-- depends on: who, when, why, the job hash approved and whether it matches what ran), the
-- worker, the outcome and the seqs of its timeline events. Read it by (tenant_id, run_id),
-- (tenant_id, job_id) or (tenant_id, created_at).
CREATE OR REPLACE VIEW warden.job_evidence AS
SELECT j.tenant_id, j.run_id, r.workflow_id, r.workflow_version,
       r.created_by AS run_created_by, j.step_id, j.job_id, j.attempt, j.topic,
       j.status AS outcome, j.worker, j.created_at, j.started_at, j.finished_at, j.result,
       j.error, j.policy_snapshot_hash, j.constraints, d.decisions,
       ap.approval_id, ap.kind AS approval_kind, ap.decided_by AS approved_by,
       ap.decided_at AS approved_at, ap.reason AS approval_reason, ap.approved_job_hash,
       ap.policy_snapshot_hash AS approval_snapshot_hash,
       ap.job_hash_matches AS approval_matches_what_ran,
       tl.seqs AS timeline_seqs
  FROM warden.jobs j
  JOIN warden.runs r ON r.tenant_id = j.tenant_id AND r.run_id = j.run_id
  JOIN warden.steps s ON s.tenant_id = j.tenant_id AND s.run_id = j.run_id
                     AND s.step_id = j.step_id
  LEFT JOIN LATERAL (
      SELECT jsonb_agg(jsonb_build_object(
                 'stage', pd.stage, 'snapshot_hash', pd.snapshot_hash, 'rule', pd.rule,
                 'decision', pd.decision, 'reason', pd.reason, 'constraints', pd.constraints,
                 'at', pd.at) ORDER BY pd.decision_id) AS decisions
        FROM warden.policy_decisions pd
       WHERE pd.tenant_id = j.tenant_id AND pd.run_id = j.run_id AND pd.step_id = j.step_id
         AND (pd.job_id = j.job_id OR pd.stage = 'submit')) d ON true
  LEFT JOIN LATERAL (
      SELECT ae.approval_id, ae.kind, ae.decided_by, ae.decided_at, ae.reason,
             ae.approved_job_hash, ae.policy_snapshot_hash, ae.job_hash_matches
        FROM warden.approval_evidence ae
       WHERE ae.tenant_id = j.tenant_id AND ae.run_id = j.run_id AND ae.status = 'approved'
         AND (ae.job_id = j.job_id OR (ae.kind = 'step' AND ae.step_id = ANY (s.depends_on)))
       ORDER BY ae.kind = 'policy' DESC, ae.decided_at DESC
       LIMIT 1) ap ON true
  LEFT JOIN LATERAL (
      SELECT array_agg(t.seq ORDER BY t.seq) AS seqs FROM warden.timeline t
       WHERE t.tenant_id = j.tenant_id AND t.job_id = j.job_id) tl ON true;

-- One row per policy activation (docs/dba.md, "Evidence views"): who switched a tenant to
-- which snapshot, when, from which, who stored that snapshot, whether the stored bundle
-- still hashes to its name (snapshot_intact), when the next activation replaced it, and
-- whether it is the tenant's active one now.
CREATE OR REPLACE VIEW warden.policy_activation_evidence AS
SELECT pa.tenant_id, pa.activation_id, pa.snapshot_hash, pa.previous_hash, pa.activated_by,
       pa.activated_at, ps.created_by AS snapshot_created_by,
       ps.created_at AS snapshot_created_at, ps.bundle->>'name' AS bundle_name,
       ps.bundle->>'default_decision' AS default_decision,
       jsonb_array_length(coalesce(ps.bundle->'rules', '[]')) AS rules,
       encode(sha256(convert_to(warden.canonical_json(ps.bundle), 'UTF8')), 'hex')
           = pa.snapshot_hash AS snapshot_intact,
       nxt.activated_at AS replaced_at,
       nxt.activated_at IS NULL AND act.snapshot_hash IS NOT DISTINCT FROM pa.snapshot_hash
           AS active_now
  FROM warden.policy_activations pa
  JOIN warden.policy_snapshots ps ON ps.tenant_id = pa.tenant_id
                                 AND ps.snapshot_hash = pa.snapshot_hash
  LEFT JOIN warden.policy_active act ON act.tenant_id = pa.tenant_id
  LEFT JOIN LATERAL (
      SELECT n.activated_at FROM warden.policy_activations n
       WHERE n.tenant_id = pa.tenant_id AND n.activation_id > pa.activation_id
       ORDER BY n.activation_id LIMIT 1) nxt ON true;

-- new functions are not everyone's: the roles of docs/security.md get what they need
REVOKE EXECUTE ON FUNCTION
    warden.timeline_problems(text, uuid), warden.canonical_json(jsonb),
    warden.event_message(text, text, uuid, bigint, timestamptz, warden.timeline_kind, text,
                         text, integer, text, jsonb),
    warden.job_hash(text, uuid, text, text, jsonb, jsonb, jsonb),
    warden.verify_timeline(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb),
    warden.verify_timeline(uuid) TO warden_engine;
GRANT EXECUTE ON FUNCTION warden.verify_timeline(uuid) TO warden_auditor;
-- ---------------------------------------------------------------- the keyed chain
-- The chain key (warden.chain_keys), event_hash (a MAC of anything), rotate_chain_key and
-- the timeline_check view stay the owner's: no grant. Checking needs no key in hand.
REVOKE ALL ON warden.chain_keys, warden.timeline_check FROM warden_engine;
GRANT EXECUTE ON FUNCTION
    warden.timeline_problems(text, uuid), warden.canonical_json(jsonb),
    warden.event_message(text, text, uuid, bigint, timestamptz, warden.timeline_kind, text,
                         text, integer, text, jsonb),
    warden.job_hash(text, uuid, text, text, jsonb, jsonb, jsonb)
    TO warden_engine, warden_auditor;
GRANT SELECT ON warden.job_evidence, warden.approval_evidence,
    warden.policy_activation_evidence TO warden_engine, warden_auditor;
RESET ROLE;  -- alembic records the revision as the migrating role
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
SET LOCAL check_function_bodies = off;
-- api_role keeps its 'auditor' value: PostgreSQL cannot drop an enum value, and keys may
-- hold it.
DROP VIEW warden.policy_activation_evidence;
DROP VIEW warden.job_evidence;
DROP VIEW warden.approval_evidence;
DROP FUNCTION warden.job_hash(text, uuid, text, text, jsonb, jsonb, jsonb);
DROP FUNCTION warden.canonical_json(jsonb);
-- Back to the unkeyed sha256 chain: re-hash every chain that verifies under its keys.
DROP FUNCTION warden.verify_timeline(uuid);
DROP FUNCTION warden.timeline_problems(text, uuid);
DROP VIEW warden.timeline_check;
DROP FUNCTION warden.event_hash(integer, text, text, uuid, bigint, timestamptz,
    warden.timeline_kind, text, text, integer, text, jsonb);
CREATE OR REPLACE FUNCTION warden.event_hash(
    prev_hash text, tenant_id text, run_id uuid, seq bigint, at timestamptz,
    kind warden.timeline_kind, step_id text, job_id text, attempt integer, actor text, data jsonb
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(concat_ws(E'\x1f',
        prev_hash, tenant_id, run_id::text, seq::text,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        kind::text, coalesce(step_id, ''), coalesce(job_id, ''), coalesce(attempt::text, ''),
        coalesce(actor, ''), data::text), 'UTF8')), 'hex')
$$;

CREATE OR REPLACE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    e          record;
    v_expected bigint := 1;
    v_prev     text := repeat('0', 64);
    v_head_seq bigint;
    v_head     text;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_head_seq, v_head
      FROM warden.runs WHERE run_id = p_run;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % not found', p_run USING ERRCODE = 'WD404';
    END IF;
    FOR e IN SELECT * FROM warden.timeline WHERE run_id = p_run ORDER BY seq LOOP
        IF e.seq <> v_expected OR e.prev_hash <> v_prev OR e.hash <> warden.event_hash(
               e.prev_hash, e.tenant_id, e.run_id, e.seq, e.at, e.kind, e.step_id, e.job_id,
               e.attempt, e.actor, e.data) THEN
            RETURN false;
        END IF;
        v_prev := e.hash;
        v_expected := v_expected + 1;
    END LOOP;
    RETURN v_expected - 1 = v_head_seq AND v_prev = v_head;
END $$;

ALTER TABLE warden.timeline DISABLE TRIGGER timeline_no_update_delete;
DO $unchain$
DECLARE
    r      record;
    e      record;
    v_prev text;
    v_hash text;
    v_ok   boolean;
BEGIN
    FOR r IN SELECT tenant_id, run_id FROM warden.runs ORDER BY tenant_id, run_id LOOP
        -- the keyed check, inline (its functions are gone already)
        v_prev := repeat('0', 64);
        v_ok := true;
        FOR e IN SELECT t.*, encode(sha256(ck.k_opad || sha256(ck.k_ipad || warden.event_message(
                          t.prev_hash, t.tenant_id, t.run_id, t.seq, t.at, t.kind, t.step_id,
                          t.job_id, t.attempt, t.actor, t.data))), 'hex') AS mac
                   FROM warden.timeline t LEFT JOIN warden.chain_keys ck ON ck.key_id = t.key_id
                  WHERE t.tenant_id = r.tenant_id AND t.run_id = r.run_id ORDER BY t.seq LOOP
            IF e.prev_hash <> v_prev OR e.mac IS DISTINCT FROM e.hash THEN
                v_ok := false;
            END IF;
            v_prev := e.hash;
        END LOOP;
        IF v_ok AND v_prev = (SELECT timeline_hash FROM warden.runs
                               WHERE tenant_id = r.tenant_id AND run_id = r.run_id) THEN
            v_prev := repeat('0', 64);
            FOR e IN SELECT * FROM warden.timeline
                      WHERE tenant_id = r.tenant_id AND run_id = r.run_id ORDER BY seq LOOP
                v_hash := warden.event_hash(v_prev, e.tenant_id, e.run_id, e.seq, e.at, e.kind,
                                            e.step_id, e.job_id, e.attempt, e.actor, e.data);
                UPDATE warden.timeline SET prev_hash = v_prev, hash = v_hash
                 WHERE tenant_id = e.tenant_id AND run_id = e.run_id AND seq = e.seq;
                v_prev := v_hash;
            END LOOP;
            UPDATE warden.runs SET timeline_hash = v_prev
             WHERE tenant_id = r.tenant_id AND run_id = r.run_id;
        END IF;
    END LOOP;
END $unchain$;
ALTER TABLE warden.timeline ENABLE TRIGGER timeline_no_update_delete;
CREATE OR REPLACE FUNCTION warden.append_events(p_tenant text, p_run uuid, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    e      jsonb;
    v_seq  bigint;
    v_prev text;
    v_at   timestamptz;
    v_hash text;
    v_kind warden.timeline_kind;
BEGIN
    SELECT timeline_seq, timeline_hash INTO v_seq, v_prev
      FROM warden.runs WHERE tenant_id = p_tenant AND run_id = p_run
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run %/% not found', p_tenant, p_run USING ERRCODE = 'WD404';
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(p_events) LOOP
        v_seq := v_seq + 1;
        v_at := warden.clock_timestamp();
        v_kind := (e->>'kind')::warden.timeline_kind;
        v_hash := warden.event_hash(v_prev, p_tenant, p_run, v_seq, v_at, v_kind,
                                    e->>'step_id', e->>'job_id', (e->>'attempt')::integer,
                                    e->>'actor', coalesce(e->'data', '{}'));
        INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, step_id, job_id,
                                     attempt, actor, data, prev_hash, hash)
        VALUES (p_tenant, p_run, v_seq, v_at, v_kind, e->>'step_id', e->>'job_id',
                (e->>'attempt')::integer, e->>'actor', coalesce(e->'data', '{}'), v_prev,
                v_hash);
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_seq = v_seq, timeline_hash = v_prev
     WHERE tenant_id = p_tenant AND run_id = p_run;
    RETURN v_seq;
END $$;
GRANT EXECUTE ON FUNCTION warden.append_events(text, uuid, jsonb) TO PUBLIC;
DROP FUNCTION warden.rotate_chain_key(text);
DROP FUNCTION warden.event_message(text, text, uuid, bigint, timestamptz, warden.timeline_kind,
    text, text, integer, text, jsonb);
DROP TABLE warden.chain_keys;
ALTER TABLE warden.timeline DROP COLUMN key_id;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
