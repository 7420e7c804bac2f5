"""Claim floors: warden.claim_marks, kept by triggers on warden.jobs and raised by
warden.advance_claim_marks, and warden.claim_jobs walking each lane from its floor
(docs/design.md#claim-floors). While any transaction held an old snapshot open, every
claim walked the entries of every job claimed since, and the drain fell to a sixth in
ten minutes (bench/README.md, growth).

Revision ID: 0026_claim_floors
Revises: 0025_start_in_one_call
Create Date: 2026-12-06

Frozen. The table, the functions, the triggers, the grants and row-level security are
verbatim copies of sql/schema/22_claim_marks.sql, sql/functions/ (claim_floor,
lower_claim_mark, claim_marks_on_insert, claim_marks_on_update, advance_claim_marks,
claim_jobs), sql/triggers/jobs.sql and sql/grants/ as of this change; the downgrade's
claim_jobs is 0023's.
"""

from alembic import op

revision = "0026_claim_floors"
down_revision = "0025_start_in_one_call"
branch_labels = None
depends_on = None

UPGRADE = r"""
SET LOCAL ROLE warden_owner;
-- Claim marks (docs/design.md#claim-floors): for every claim lane (a
-- topic, a tenant and its gate keys), a floor under the claim order (priority,
-- available_at) of its pending jobs, so that a claim's walk of jobs_claimable starts at
-- the first job that can still be pending instead of at the lane's first entry.
--
-- Why: a claim leaves the old version of its job row behind, and its entry in
-- jobs_claimable with it. While any snapshot that may still see that version is open (a
-- long report, a forgotten BEGIN, a replica's feedback), neither vacuum nor the index
-- scans themselves may remove the entry, and claims come in claim order: every dead entry
-- sits in front of the live ones. A claim that starts at the lane's beginning visits all
-- of them, each with a heap fetch, so the drain fell to a sixth after ten minutes of an
-- open transaction (bench/README.md, growth). A claim that starts at the floor visits
-- only what was claimed since the floor last moved.
--
-- Append-only, keyed so that no reader ever walks a dead row: the rows of a lane are read
-- newest first (the primary key, backwards), down to its newest `advance` row; the rows
-- the advancer deleted are all older, behind them, never stepped on however long a
-- snapshot keeps them. The floor of a
-- lane is the least (priority, available_at) among its newest advance row and every row
-- after it:
-- * an advance row is written by warden.advance_claim_marks, which raises the floor to
--   the lane's first pending job (or to 'infinity' when the lane is empty) and deletes
--   the lane's older rows in the same transaction;
-- * a lowering row (advance = false) is written by the insert of a pending job below the
--   floor (warden.lower_claim_mark, from the jobs triggers), in that insert's transaction.
-- The two never race: a writer holds a shared advisory lock on its (topic, tenant) from
-- its lowering to its commit, and the advancer only tries the exclusive one, then reads
-- with a snapshot taken after it (the whole argument: docs/design.md).
--
-- Internal: only the owner's functions read and write it (no grant, row-level security on
-- with no policy for anyone else).
CREATE TABLE warden.claim_marks (
    topic            text        NOT NULL,
    tenant_id        text        NOT NULL,
    concurrency_key  text        NOT NULL,
    rate_key         text        NOT NULL,
    -- insertion order: an advance row supersedes every row of its lane before it
    epoch            bigint      GENERATED ALWAYS AS IDENTITY,
    advance          boolean     NOT NULL,
    -- the floor: no pending job of the lane comes before (priority, available_at);
    -- available_at 'infinity' on an advance row: the lane had no pending job
    priority         smallint    NOT NULL,
    available_at     timestamptz NOT NULL,
    marked_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, tenant_id, concurrency_key, rate_key, epoch)
);

-- The claim floor of one lane (sql/schema/22_claim_marks.sql): no pending job of the
-- lane comes before (priority, available_at) in claim order; available_at 'infinity':
-- the lane had no pending job when last looked at, and nothing was dispatched to it
-- since. No row: the lane has no mark (it never had a pending job, or was forgotten).
--
-- The least of the lane's newest advance row and every row after it: both reads walk the
-- primary key from the newest row down, so the rows the advancer deleted, all older, are
-- never visited. SQL and STABLE with no SET clause, so that the planner inlines it into
-- warden.claim_jobs' lane scan. Only the owner's functions call it: no grant.
CREATE OR REPLACE FUNCTION warden.claim_floor(
    p_topic text, p_tenant_id text, p_concurrency_key text, p_rate_key text
) RETURNS TABLE (priority smallint, available_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.priority, m.available_at
      FROM warden.claim_marks m
     WHERE m.topic = p_topic AND m.tenant_id = p_tenant_id
       AND m.concurrency_key = p_concurrency_key AND m.rate_key = p_rate_key
       AND m.epoch >= coalesce((
           SELECT a.epoch FROM warden.claim_marks a
            WHERE a.topic = p_topic AND a.tenant_id = p_tenant_id
              AND a.concurrency_key = p_concurrency_key AND a.rate_key = p_rate_key
              AND a.advance
            ORDER BY a.epoch DESC
            LIMIT 1), 0)
     ORDER BY m.priority, m.available_at
     LIMIT 1
$$;

-- Keeps a lane's claim floor at or below a job that is becoming pending in it
-- (sql/schema/22_claim_marks.sql), in the transaction that makes it pending: called by
-- the jobs triggers (sql/triggers/jobs.sql) for each lane a statement adds pending jobs
-- to, with the least (priority, available_at) among them.
--
-- The shared lock on the lane's (topic, tenant) is held to this transaction's end: the
-- advancer (warden.advance_claim_marks) only tries the exclusive one, so it never raises
-- a floor while a job below the new floor may still be uncommitted. A writer that comes
-- while the advancer holds the lock waits for its commit, then reads the raised floor
-- here with a snapshot taken after it, and lowers it again if its job is below.
--
-- SECURITY DEFINER: the triggers fire for the engine and for the owner's functions alike,
-- and only the owner may write warden.claim_marks. No grant.
CREATE OR REPLACE FUNCTION warden.lower_claim_mark(
    p_topic text, p_tenant_id text, p_concurrency_key text, p_rate_key text,
    p_priority smallint, p_available_at timestamptz
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(
        hashtextextended(concat_ws(chr(31), 'm', p_topic, p_tenant_id), 14));
    IF NOT EXISTS (
        SELECT 1 FROM warden.claim_floor(p_topic, p_tenant_id, p_concurrency_key,
                                         p_rate_key) f
         WHERE (f.priority, f.available_at) <= (p_priority, p_available_at)) THEN
        INSERT INTO warden.claim_marks
            (topic, tenant_id, concurrency_key, rate_key, advance, priority, available_at)
        VALUES (p_topic, p_tenant_id, p_concurrency_key, p_rate_key, false, p_priority,
                p_available_at);
    END IF;
END $$;

-- The trigger function of jobs_claim_marks_on_insert (sql/triggers/jobs.sql): once per
-- INSERT statement, the least claim key each lane receives among the statement's pending
-- jobs keeps that lane's floor at or below it (warden.lower_claim_mark). Once per
-- statement, not per row: a fan-out dispatches a hundred jobs of one lane in one INSERT.
CREATE OR REPLACE FUNCTION warden.claim_marks_on_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l record;
BEGIN
    FOR l IN
        SELECT DISTINCT ON (n.topic, n.tenant_id, n.concurrency_key, n.rate_key)
               n.topic, n.tenant_id, n.concurrency_key, n.rate_key, n.priority,
               n.available_at
          FROM inserted n
         WHERE n.status = 'pending'
         ORDER BY n.topic, n.tenant_id, n.concurrency_key, n.rate_key, n.priority,
                  n.available_at
    LOOP
        PERFORM warden.lower_claim_mark(l.topic, l.tenant_id, l.concurrency_key, l.rate_key,
                                        l.priority, l.available_at);
    END LOOP;
    RETURN NULL;
END $$;

-- The trigger function of jobs_claim_marks_on_update (sql/triggers/jobs.sql): a job that
-- becomes pending again (a held job released), or a pending job whose claim key moves
-- earlier, keeps its lane's floor at or below it (warden.lower_claim_mark).
CREATE OR REPLACE FUNCTION warden.claim_marks_on_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM warden.lower_claim_mark(NEW.topic, NEW.tenant_id, NEW.concurrency_key,
                                    NEW.rate_key, NEW.priority, NEW.available_at);
    RETURN NULL;
END $$;

-- Raises each lane's claim floor to its first pending job (sql/schema/22_claim_marks.sql),
-- so that claims start their walk of jobs_claimable there and not at the entries of jobs
-- claimed since; `warden serve` calls it a few times a second (engine/daemons/serve.py).
-- Returns how many lanes it moved.
--
-- It moves the lanes of the tenants the caller's session may see, as warden.reap_expired_jobs
-- reaps: every tenant's for `warden serve`'s loops (scope '*') and the owner, the tenant
-- in scope for any other engine session, none for a session with no scope; so neither
-- what it does nor the count it returns reaches past a session's tenant.
--
-- Per (topic, tenant): only when the exclusive advisory lock is free at once, i.e. no
-- transaction that made a job of it pending is still open (warden.lower_claim_mark holds
-- the shared one to its end). Each statement after the lock reads with a snapshot taken
-- after it (READ COMMITTED, hence the check below), so it sees every such job that
-- committed. A group whose lock is busy keeps its floor until the next call: a floor
-- that lags costs the claims a longer walk, never a job. Nothing here waits for a lock,
-- so it can never be part of a deadlock.
--
-- Per lane: a floor already at its first pending job writes nothing; otherwise one
-- advance row, and the lane's older rows deleted. A lane empty since its last advance
-- more than ten minutes ago is forgotten (the next pending job marks it again).
CREATE OR REPLACE FUNCTION warden.advance_claim_marks() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    g        record;
    l        record;
    v_floor  record;
    v_first  record;
    v_newest record;
    v_epoch  bigint;
    v_moved  integer := 0;
    v_all    boolean := warden.sees_every_tenant();
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'warden.advance_claim_marks must run in READ COMMITTED'
            USING ERRCODE = '25000',
                  HINT = 'each statement after the lock must see the jobs committed before it';
    END IF;
    FOR g IN
        SELECT DISTINCT m.topic, m.tenant_id FROM warden.claim_marks m
         WHERE v_all OR warden.in_scope(m.tenant_id)
    LOOP
        CONTINUE WHEN NOT pg_try_advisory_xact_lock(
            hashtextextended(concat_ws(chr(31), 'm', g.topic, g.tenant_id), 14));
        FOR l IN
            SELECT DISTINCT m.concurrency_key, m.rate_key FROM warden.claim_marks m
             WHERE m.topic = g.topic AND m.tenant_id = g.tenant_id
        LOOP
            SELECT f.priority, f.available_at INTO v_floor
              FROM warden.claim_floor(g.topic, g.tenant_id, l.concurrency_key, l.rate_key) f;
            CONTINUE WHEN NOT FOUND;
            SELECT m.epoch, m.advance, m.available_at, m.marked_at INTO v_newest
              FROM warden.claim_marks m
             WHERE m.topic = g.topic AND m.tenant_id = g.tenant_id
               AND m.concurrency_key = l.concurrency_key AND m.rate_key = l.rate_key
             ORDER BY m.epoch DESC LIMIT 1;
            IF v_newest.advance AND v_floor.available_at = 'infinity' THEN
                -- empty, and nothing dispatched to it since: forget it after a while
                IF v_newest.marked_at < now() - interval '10 minutes' THEN
                    DELETE FROM warden.claim_marks m
                     WHERE m.topic = g.topic AND m.tenant_id = g.tenant_id
                       AND m.concurrency_key = l.concurrency_key AND m.rate_key = l.rate_key;
                END IF;
                CONTINUE;
            END IF;
            SELECT j.priority, j.available_at INTO v_first
              FROM warden.jobs j
             WHERE j.status = 'pending' AND j.topic = g.topic AND j.tenant_id = g.tenant_id
               AND j.concurrency_key = l.concurrency_key AND j.rate_key = l.rate_key
               AND (j.priority, j.available_at) >= (v_floor.priority, v_floor.available_at)
             ORDER BY j.priority, j.available_at
             LIMIT 1;
            IF NOT FOUND THEN
                SELECT 32767::smallint AS priority, 'infinity'::timestamptz AS available_at
                  INTO v_first;
            END IF;
            CONTINUE WHEN v_newest.advance
                AND (v_first.priority, v_first.available_at)
                    = (v_floor.priority, v_floor.available_at);
            INSERT INTO warden.claim_marks
                (topic, tenant_id, concurrency_key, rate_key, advance, priority, available_at)
            VALUES (g.topic, g.tenant_id, l.concurrency_key, l.rate_key, true,
                    v_first.priority, v_first.available_at)
            RETURNING epoch INTO v_epoch;
            DELETE FROM warden.claim_marks m
             WHERE m.topic = g.topic AND m.tenant_id = g.tenant_id
               AND m.concurrency_key = l.concurrency_key AND m.rate_key = l.rate_key
               AND m.epoch < v_epoch;
            v_moved := v_moved + 1;
        END LOOP;
    END LOOP;
    RETURN v_moved;
END $$;

-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, of a tenant and topic the login role is
-- granted (warden.worker_grants), and dispatched under the policy snapshot that is still
-- its tenant's active one (a drifted job is skipped here and re-evaluated by the
-- scheduler, which the activation woke), and whose gates are open: fewer than
-- concurrency_limit jobs of its tenant and concurrency_key running, fewer than rate_limit
-- claims of its tenant and rate_key in the last rate_per_ms (a job over a limit stays
-- pending, in its place). Order: each tenant's best job before anyone's second (fair
-- tenants), then priority (run priority * 10 + step priority), then available_at.
--
-- SECURITY DEFINER, like every worker function: a worker role holds EXECUTE on these and
-- no table privilege at all (sql/grants/20_privileges.sql), so this body is the only way
-- its claims reach warden.jobs. The search_path is fixed and every name qualified, so a
-- caller's objects can never stand in for warden's. available_at and started_at say how
-- long the job waited for this claim; traceparent (NULL unless traces are on) is the W3C
-- parent of the worker's spans for this attempt (docs/sql-worker.md).
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text, available_at timestamptz,
    started_at timestamptz, traceparent text
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call, as complete_jobs: a custom plan per statement per call
-- cost ~0.6 ms of a ~0.9 ms claim of one job, paid on every claim (bench/README.md)
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    c            record;
    l            record;
    i            integer;
    v_topic      text;
    v_lock       bigint;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    v_events     jsonb;
    -- every lane with pending jobs (a topic, a tenant, its gate keys and their limits)
    a_topic      text[] := '{}';
    a_tenant     text[] := '{}';
    a_ckey       text[] := '{}';
    a_climit     integer[] := '{}';
    a_rkey       text[] := '{}';
    a_rlimit     integer[] := '{}';
    a_rper       integer[] := '{}';
    a_fp         smallint[] := '{}';  -- each lane's claim floor: priority, available_at
    a_fa         timestamptz[] := '{}';
    -- the lanes this claim takes from, and how many jobs each
    l_topic      text[] := '{}';
    l_tenant     text[] := '{}';
    l_ckey       text[] := '{}';
    l_rkey       text[] := '{}';
    l_cap        integer[] := '{}';
    l_fp         smallint[] := '{}';
    l_fa         timestamptz[] := '{}';
    -- per gate ('c' or 'r', tenant, key, joined by U+001F): what is in use (running jobs,
    -- or claims inside the window) and how many more this claim may take
    v_used       jsonb := '{}';
    v_caps       jsonb := '{}';
    v_gate       text;
    v_n          integer;
    v_cap        integer;
    -- per concurrency gate: the stripe of each job this claim may add (a JSON array)
    v_slots      jsonb := '{}';
    v_stripes    jsonb;
    v_stripe     integer;
    v_start      integer;
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- 1. The lanes with pending jobs. Each lane (a tenant and its gate keys) is found by a
    -- loose scan of its claim marks, newest first (one probe per lane), and its first
    -- pending job by one probe of jobs_claimable that starts at the lane's claim floor
    -- (sql/schema/22_claim_marks.sql): never in front of it, where the entries of the jobs
    -- claimed since the floor last moved lie, and pile up while any old snapshot is open.
    -- Walking lanes rather than one ordered list is what lets a job behind a closed gate,
    -- or behind another tenant's backlog, be claimed
    -- (docs/workflows.md#concurrency-and-rate-limits).
    FOREACH v_topic IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(claim_jobs.topics) AS u) LOOP
        FOR l IN
            WITH RECURSIVE lane AS (
                (SELECT m.tenant_id, m.concurrency_key, m.rate_key
                   FROM warden.claim_marks m
                  WHERE m.topic = v_topic
                  ORDER BY m.tenant_id DESC, m.concurrency_key DESC, m.rate_key DESC,
                           m.epoch DESC
                  LIMIT 1)
                UNION ALL
                SELECT n.* FROM lane p CROSS JOIN LATERAL (
                    SELECT m.tenant_id, m.concurrency_key, m.rate_key
                      FROM warden.claim_marks m
                     WHERE m.topic = v_topic
                       AND (m.tenant_id, m.concurrency_key, m.rate_key)
                           < (p.tenant_id, p.concurrency_key, p.rate_key)
                     ORDER BY m.tenant_id DESC, m.concurrency_key DESC, m.rate_key DESC,
                              m.epoch DESC
                     LIMIT 1) n
            )
            SELECT lane.tenant_id, lane.concurrency_key, lane.rate_key, f.priority AS fp,
                   f.available_at AS fa, j.concurrency_limit, j.rate_limit, j.rate_per_ms
              FROM lane
             CROSS JOIN LATERAL warden.claim_floor(v_topic, lane.tenant_id,
                                                  lane.concurrency_key, lane.rate_key) f
             CROSS JOIN LATERAL (
                   SELECT j.concurrency_limit, j.rate_limit, j.rate_per_ms
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = v_topic
                      AND j.tenant_id = lane.tenant_id
                      AND j.concurrency_key = lane.concurrency_key
                      AND j.rate_key = lane.rate_key
                      AND (j.priority, j.available_at) >= (f.priority, f.available_at)
                    ORDER BY j.priority, j.available_at
                    LIMIT 1) j
             -- only what the login role is granted (warden.worker_grants)
             WHERE f.available_at < 'infinity' AND warden.granted(lane.tenant_id, v_topic)
        LOOP
            a_topic := a_topic || v_topic;
            a_tenant := a_tenant || l.tenant_id;
            a_ckey := a_ckey || l.concurrency_key;
            a_climit := a_climit || l.concurrency_limit;
            a_rkey := a_rkey || l.rate_key;
            a_rlimit := a_rlimit || l.rate_limit;
            a_rper := a_rper || l.rate_per_ms;
            a_fp := a_fp || l.fp;
            a_fa := a_fa || l.fa;
        END LOOP;
    END LOOP;
    -- 2. Rate gates: each count is exact because it is taken under a transaction-level
    -- advisory lock on the gate (tenant and key), held to commit: the next claimer of the
    -- key counts only after this claim's claims are committed (a new snapshot per
    -- statement, READ COMMITTED). These are waited for, all before any other lock and in
    -- one global order (by lock id), so claimers never wait on each other in a cycle and
    -- nobody holding a run lock ever waits for one.
    FOR v_lock IN
        SELECT DISTINCT hashtextextended(concat_ws(chr(31), 'r', t, k), 14)
          FROM unnest(a_tenant, a_rkey) AS x(t, k)
         WHERE k <> ''
         ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    -- 3. Concurrency keys: a key's limit L is split over least(L, 16) stripes (stripe s
    -- holds L / 16, plus one for s < L % 16: together exactly L), each counted under an
    -- advisory lock of its own, and each claimed job records its stripe. Claimers of one
    -- key then work in parallel on different stripes instead of queueing through one lock
    -- and its commit (bench/claim_gates.py). Stripe locks are only tried, never waited
    -- for, starting at a random stripe, until this claim has room for max_jobs; a claim
    -- that gets no stripe gets nothing of that key this time (its worker polls again).
    -- Completion, failure, reaping and cancellation take no lock: a job that is no
    -- longer running is no longer counted. Lanes of one key may carry different limits
    -- (two workflow versions): the smallest one met bounds them all.
    FOR l IN
        SELECT t AS tenant_id, k AS ckey, min(n) AS lim
          FROM unnest(a_tenant, a_ckey, a_climit) AS x(t, k, n)
         WHERE k <> ''
         GROUP BY t, k
    LOOP
        v_gate := concat_ws(chr(31), 'c', l.tenant_id, l.ckey);
        v_stripes := '[]';
        v_n := least(l.lim, 16);  -- stripes
        v_start := floor(random() * v_n)::integer;
        FOR i IN 0 .. v_n - 1 LOOP
            v_stripe := (v_start + i) % v_n;
            v_cap := l.lim / 16 + CASE WHEN v_stripe < l.lim % 16 THEN 1 ELSE 0 END;
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(
                hashtextextended(concat_ws(chr(31), v_gate, v_stripe), 14));
            SELECT v_cap - count(*) INTO v_cap FROM (
                SELECT 1 FROM warden.jobs r
                 WHERE r.tenant_id = l.tenant_id AND r.concurrency_key = l.ckey
                   AND r.concurrency_stripe = v_stripe AND r.status = 'running'
                 LIMIT v_cap) z;
            IF v_cap > 0 THEN
                v_stripes := v_stripes || to_jsonb(array_fill(v_stripe, ARRAY[v_cap]));
            END IF;
            EXIT WHEN jsonb_array_length(v_stripes) >= claim_jobs.max_jobs;
        END LOOP;
        v_caps := v_caps || jsonb_build_object(v_gate, jsonb_array_length(v_stripes));
        v_slots := v_slots || jsonb_build_object(v_gate, v_stripes);
    END LOOP;
    -- 4. How many jobs each lane may give: max_jobs, or less where its gates are fuller.
    FOR i IN 1 .. coalesce(array_length(a_topic, 1), 0) LOOP
        v_cap := claim_jobs.max_jobs;
        IF a_ckey[i] <> '' THEN
            v_cap := least(v_cap, (v_caps ->> concat_ws(chr(31), 'c', a_tenant[i],
                                                        a_ckey[i]))::integer);
        END IF;
        IF a_rkey[i] <> '' THEN
            v_gate := concat_ws(chr(31), 'r', a_tenant[i], a_rkey[i]);
            IF v_used -> v_gate IS NULL THEN
                SELECT count(*) INTO v_n FROM (
                    SELECT 1 FROM warden.jobs r
                     WHERE r.tenant_id = a_tenant[i] AND r.rate_key = a_rkey[i]
                       AND r.started_at > v_now - make_interval(secs => a_rper[i] / 1000.0)
                     LIMIT a_rlimit[i]) z;
                v_used := v_used || jsonb_build_object(v_gate, v_n);
            END IF;
            v_n := least(coalesce((v_caps ->> v_gate)::integer, 2147483647),
                         greatest(a_rlimit[i] - (v_used ->> v_gate)::integer, 0));
            v_caps := v_caps || jsonb_build_object(v_gate, v_n);
            v_cap := least(v_cap, v_n);
        END IF;
        IF v_cap > 0 THEN
            l_topic := l_topic || a_topic[i];
            l_tenant := l_tenant || a_tenant[i];
            l_ckey := l_ckey || a_ckey[i];
            l_rkey := l_rkey || a_rkey[i];
            l_cap := l_cap || v_cap;
            l_fp := l_fp || a_fp[i];
            l_fa := l_fa || a_fa[i];
        END IF;
    END LOOP;
    FOR c IN
        -- 5. Up to `cap` jobs of each open lane in (priority, available_at) order, one
        -- index walk each from the lane's floor that LIMIT stops early. SKIP LOCKED:
        -- concurrent claimers take disjoint rows instead of queueing behind each other;
        -- rows the filters below drop are unlocked at commit, claimable again at once.
        WITH lanes AS (
            SELECT * FROM unnest(l_topic, l_tenant, l_ckey, l_rkey, l_cap, l_fp, l_fa)
                       AS x(topic, tenant_id, ckey, rkey, cap, fp, fa)
        ), candidates AS (
            SELECT p.*
              FROM lanes ln
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at,
                          j.concurrency_key, j.rate_key
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = ln.topic
                      AND j.tenant_id = ln.tenant_id AND j.concurrency_key = ln.ckey
                      AND j.rate_key = ln.rkey
                      -- from the lane's claim floor as step 1 read it: an advance since
                      -- only raised it to a job still pending; a job made pending below
                      -- it since is the next claim's, as if it had come a moment later
                      AND (j.priority, j.available_at) >= (ln.fp, ln.fa)
                      AND j.available_at <= v_now
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT ln.cap
                      FOR UPDATE OF j SKIP LOCKED) p
        ), keyed AS (
            -- several lanes (topics, rate keys) may share one key: its capacity is shared
            SELECT k.*,
                   row_number() OVER (PARTITION BY k.tenant_id, k.concurrency_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_c,
                   row_number() OVER (PARTITION BY k.tenant_id, k.rate_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_r
              FROM candidates k
        ), allowed AS (
            -- fair tenants: each tenant's best job ranks 1, its second 2, ...; a batch
            -- takes every tenant's rank 1 before anyone's rank 2, so one tenant's backlog
            -- delays another tenant's job by at most one batch
            SELECT a.*, row_number() OVER (PARTITION BY a.tenant_id
                                           ORDER BY a.priority, a.available_at) AS n_t
              FROM keyed a
             WHERE (a.concurrency_key = '' OR a.n_c <= (v_caps ->> concat_ws(
                        chr(31), 'c', a.tenant_id, a.concurrency_key))::integer)
               AND (a.rate_key = '' OR a.n_r <= (v_caps ->> concat_ws(
                        chr(31), 'r', a.tenant_id, a.rate_key))::integer)
        ), picked AS (
            SELECT f.tenant_id, f.job_id, f.concurrency_key, f.n_c FROM allowed f
             ORDER BY f.n_t, f.priority, f.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   -- the n-th job of a key takes the n-th free place of the stripes held
                   concurrency_stripe = CASE WHEN p.concurrency_key <> '' THEN
                       (v_slots -> concat_ws(chr(31), 'c', p.tenant_id, p.concurrency_key)
                                ->> (p.n_c - 1)::integer)::smallint END,
                   deadline_at = v_now + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(v_now + claim_jobs.lease,
                                            v_now + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked in (tenant, run) order: two claimers holding disjoint jobs of
        -- the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- Each run is locked once per claim, and the events of all the claim's runs are
        -- appended in one call at its end (append_events_for_runs_unscoped: one INSERT;
        -- unscoped, as a worker session carries no tenant scope: the grants were checked
        -- above), not once per claimed job: a fan-out's workers and its scheduler would
        -- queue on the run row for each.
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                v_batch := v_batch || jsonb_build_array(jsonb_build_object(
                    'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            v_events := '[]';
            -- under the run's lock: a run cancelled (or otherwise ended) while this claim
            -- waited does not hand its job out; the job ends cancelled instead
            SELECT r.status INTO v_run_status FROM warden.runs r
             WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
               FOR NO KEY UPDATE;
        END IF;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = v_now,
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            v_events := v_events || jsonb_build_array(jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed')));
            CONTINUE;
        END IF;
        v_events := v_events || jsonb_build_array(jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at)));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        available_at := c.available_at; started_at := c.started_at;
        traceparent := c.traceparent;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        v_batch := v_batch || jsonb_build_array(jsonb_build_object(
            'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
        PERFORM warden.append_events_for_runs_unscoped(v_batch);
    END IF;
END $$;

-- (sql/triggers/jobs.sql)
-- Claim floors (sql/schema/22_claim_marks.sql): every way a job becomes pending keeps its
-- lane's floor at or below it, in the same transaction. Inserts once per statement, over
-- the statement's new rows; updates only where the WHEN finds a job made pending or moved
-- earlier in claim order (never for a claim, a heartbeat or a completion).
CREATE OR REPLACE TRIGGER jobs_claim_marks_on_insert
    AFTER INSERT ON warden.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION warden.claim_marks_on_insert();
CREATE OR REPLACE TRIGGER jobs_claim_marks_on_update
    AFTER UPDATE ON warden.jobs
    FOR EACH ROW
    WHEN (NEW.status = 'pending' AND (
          OLD.status <> 'pending'
          OR (NEW.priority, NEW.available_at) < (OLD.priority, OLD.available_at)
          OR (NEW.topic, NEW.tenant_id, NEW.concurrency_key, NEW.rate_key)
             IS DISTINCT FROM (OLD.topic, OLD.tenant_id, OLD.concurrency_key, OLD.rate_key)))
    EXECUTE FUNCTION warden.claim_marks_on_update();

-- (sql/grants/20_privileges.sql)
GRANT EXECUTE ON FUNCTION warden.advance_claim_marks() TO warden_engine;
REVOKE ALL ON warden.claim_marks FROM warden_engine;
-- (sql/grants/30_row_security.sql)
ALTER TABLE warden.claim_marks ENABLE ROW LEVEL SECURITY;
-- Every lane that has pending jobs now gets its floor at its first one. The triggers
-- above took their lock on warden.jobs (SHARE ROW EXCLUSIVE): no job is being made
-- pending while this reads, and every later one passes through them.
INSERT INTO warden.claim_marks
    (topic, tenant_id, concurrency_key, rate_key, advance, priority, available_at)
SELECT DISTINCT ON (j.topic, j.tenant_id, j.concurrency_key, j.rate_key)
       j.topic, j.tenant_id, j.concurrency_key, j.rate_key, false, j.priority, j.available_at
  FROM warden.jobs j
 WHERE j.status = 'pending'
 ORDER BY j.topic, j.tenant_id, j.concurrency_key, j.rate_key, j.priority, j.available_at;
RESET ROLE;
"""

DOWNGRADE = r"""
SET LOCAL ROLE warden_owner;
DROP TRIGGER jobs_claim_marks_on_insert ON warden.jobs;
DROP TRIGGER jobs_claim_marks_on_update ON warden.jobs;
-- Claims up to max_jobs claimable jobs of the given topics for `worker`, leasing each
-- for `lease` (never past the attempt's timeout), and returns what the worker needs.
-- The job protocol's entry point for workers in any language (docs/sql-worker.md).
--
-- Claimable: pending, available_at reached, of a tenant and topic the login role is
-- granted (warden.worker_grants), and dispatched under the policy snapshot that is still
-- its tenant's active one (a drifted job is skipped here and re-evaluated by the
-- scheduler, which the activation woke), and whose gates are open: fewer than
-- concurrency_limit jobs of its tenant and concurrency_key running, fewer than rate_limit
-- claims of its tenant and rate_key in the last rate_per_ms (a job over a limit stays
-- pending, in its place). Order: each tenant's best job before anyone's second (fair
-- tenants), then priority (run priority * 10 + step priority), then available_at.
--
-- SECURITY DEFINER, like every worker function: a worker role holds EXECUTE on these and
-- no table privilege at all (sql/grants/20_privileges.sql), so this body is the only way
-- its claims reach warden.jobs. The search_path is fixed and every name qualified, so a
-- caller's objects can never stand in for warden's. available_at and started_at say how
-- long the job waited for this claim; traceparent (NULL unless traces are on) is the W3C
-- parent of the worker's spans for this attempt (docs/sql-worker.md).
CREATE OR REPLACE FUNCTION warden.claim_jobs(
    topics text[], worker text, max_jobs integer, lease interval
) RETURNS TABLE (
    job_id text, run_id uuid, step_id text, attempt integer, topic text, input jsonb,
    upstream jsonb, checkpoint jsonb, constraints jsonb, lease_token uuid,
    lease_expires_at timestamptz, tenant_id text, available_at timestamptz,
    started_at timestamptz, traceparent text
) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Generic plans from the first call, as complete_jobs: a custom plan per statement per call
-- cost ~0.6 ms of a ~0.9 ms claim of one job, paid on every claim (bench/README.md)
SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    c            record;
    l            record;
    i            integer;
    v_topic      text;
    v_lock       bigint;
    v_now        timestamptz := warden.now();
    v_run_status warden.run_status;
    v_tenant     text;
    v_run        uuid;
    v_events     jsonb;
    -- every lane with pending jobs (a topic, a tenant, its gate keys and their limits)
    a_topic      text[] := '{}';
    a_tenant     text[] := '{}';
    a_ckey       text[] := '{}';
    a_climit     integer[] := '{}';
    a_rkey       text[] := '{}';
    a_rlimit     integer[] := '{}';
    a_rper       integer[] := '{}';
    -- the lanes this claim takes from, and how many jobs each
    l_topic      text[] := '{}';
    l_tenant     text[] := '{}';
    l_ckey       text[] := '{}';
    l_rkey       text[] := '{}';
    l_cap        integer[] := '{}';
    -- per gate ('c' or 'r', tenant, key, joined by U+001F): what is in use (running jobs,
    -- or claims inside the window) and how many more this claim may take
    v_used       jsonb := '{}';
    v_caps       jsonb := '{}';
    v_gate       text;
    v_n          integer;
    v_cap        integer;
    -- per concurrency gate: the stripe of each job this claim may add (a JSON array)
    v_slots      jsonb := '{}';
    v_stripes    jsonb;
    v_stripe     integer;
    v_start      integer;
    v_batch      jsonb := '[]';  -- every run's events, appended in one call at the end
BEGIN
    IF claim_jobs.max_jobs < 1 OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'max_jobs must be >= 1 and lease > 0' USING ERRCODE = '22023';
    END IF;
    -- 1. The lanes with pending jobs, one index probe each (a loose scan of jobs_claimable:
    -- each probe jumps past the whole previous lane, so 100,000 jobs of one tenant or one
    -- closed key cost one probe, not a walk). A lane is a tenant and its gate keys; walking
    -- lanes rather than one ordered list is what lets a job behind a closed gate, or behind
    -- another tenant's backlog, be claimed (docs/workflows.md#concurrency-and-rate-limits).
    FOREACH v_topic IN ARRAY ARRAY(SELECT DISTINCT u FROM unnest(claim_jobs.topics) AS u) LOOP
        FOR l IN
            WITH RECURSIVE lane AS (
                (SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                        j.rate_limit, j.rate_per_ms
                   FROM warden.jobs j
                  WHERE j.status = 'pending' AND j.topic = v_topic
                  ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                           j.available_at
                  LIMIT 1)
                UNION ALL
                SELECT n.* FROM lane p CROSS JOIN LATERAL (
                    SELECT j.tenant_id, j.concurrency_key, j.rate_key, j.concurrency_limit,
                           j.rate_limit, j.rate_per_ms
                      FROM warden.jobs j
                     WHERE j.status = 'pending' AND j.topic = v_topic
                       AND (j.tenant_id, j.concurrency_key, j.rate_key)
                           > (p.tenant_id, p.concurrency_key, p.rate_key)
                     ORDER BY j.tenant_id, j.concurrency_key, j.rate_key, j.priority,
                              j.available_at
                     LIMIT 1) n
            )
            SELECT * FROM lane
             -- only what the login role is granted (warden.worker_grants)
             WHERE warden.granted(lane.tenant_id, v_topic)
        LOOP
            a_topic := a_topic || v_topic;
            a_tenant := a_tenant || l.tenant_id;
            a_ckey := a_ckey || l.concurrency_key;
            a_climit := a_climit || l.concurrency_limit;
            a_rkey := a_rkey || l.rate_key;
            a_rlimit := a_rlimit || l.rate_limit;
            a_rper := a_rper || l.rate_per_ms;
        END LOOP;
    END LOOP;
    -- 2. Rate gates: each count is exact because it is taken under a transaction-level
    -- advisory lock on the gate (tenant and key), held to commit: the next claimer of the
    -- key counts only after this claim's claims are committed (a new snapshot per
    -- statement, READ COMMITTED). These are waited for, all before any other lock and in
    -- one global order (by lock id), so claimers never wait on each other in a cycle and
    -- nobody holding a run lock ever waits for one.
    FOR v_lock IN
        SELECT DISTINCT hashtextextended(concat_ws(chr(31), 'r', t, k), 14)
          FROM unnest(a_tenant, a_rkey) AS x(t, k)
         WHERE k <> ''
         ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    -- 3. Concurrency keys: a key's limit L is split over least(L, 16) stripes (stripe s
    -- holds L / 16, plus one for s < L % 16: together exactly L), each counted under an
    -- advisory lock of its own, and each claimed job records its stripe. Claimers of one
    -- key then work in parallel on different stripes instead of queueing through one lock
    -- and its commit (bench/claim_gates.py). Stripe locks are only tried, never waited
    -- for, starting at a random stripe, until this claim has room for max_jobs; a claim
    -- that gets no stripe gets nothing of that key this time (its worker polls again).
    -- Completion, failure, reaping and cancellation take no lock: a job that is no
    -- longer running is no longer counted. Lanes of one key may carry different limits
    -- (two workflow versions): the smallest one met bounds them all.
    FOR l IN
        SELECT t AS tenant_id, k AS ckey, min(n) AS lim
          FROM unnest(a_tenant, a_ckey, a_climit) AS x(t, k, n)
         WHERE k <> ''
         GROUP BY t, k
    LOOP
        v_gate := concat_ws(chr(31), 'c', l.tenant_id, l.ckey);
        v_stripes := '[]';
        v_n := least(l.lim, 16);  -- stripes
        v_start := floor(random() * v_n)::integer;
        FOR i IN 0 .. v_n - 1 LOOP
            v_stripe := (v_start + i) % v_n;
            v_cap := l.lim / 16 + CASE WHEN v_stripe < l.lim % 16 THEN 1 ELSE 0 END;
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(
                hashtextextended(concat_ws(chr(31), v_gate, v_stripe), 14));
            SELECT v_cap - count(*) INTO v_cap FROM (
                SELECT 1 FROM warden.jobs r
                 WHERE r.tenant_id = l.tenant_id AND r.concurrency_key = l.ckey
                   AND r.concurrency_stripe = v_stripe AND r.status = 'running'
                 LIMIT v_cap) z;
            IF v_cap > 0 THEN
                v_stripes := v_stripes || to_jsonb(array_fill(v_stripe, ARRAY[v_cap]));
            END IF;
            EXIT WHEN jsonb_array_length(v_stripes) >= claim_jobs.max_jobs;
        END LOOP;
        v_caps := v_caps || jsonb_build_object(v_gate, jsonb_array_length(v_stripes));
        v_slots := v_slots || jsonb_build_object(v_gate, v_stripes);
    END LOOP;
    -- 4. How many jobs each lane may give: max_jobs, or less where its gates are fuller.
    FOR i IN 1 .. coalesce(array_length(a_topic, 1), 0) LOOP
        v_cap := claim_jobs.max_jobs;
        IF a_ckey[i] <> '' THEN
            v_cap := least(v_cap, (v_caps ->> concat_ws(chr(31), 'c', a_tenant[i],
                                                        a_ckey[i]))::integer);
        END IF;
        IF a_rkey[i] <> '' THEN
            v_gate := concat_ws(chr(31), 'r', a_tenant[i], a_rkey[i]);
            IF v_used -> v_gate IS NULL THEN
                SELECT count(*) INTO v_n FROM (
                    SELECT 1 FROM warden.jobs r
                     WHERE r.tenant_id = a_tenant[i] AND r.rate_key = a_rkey[i]
                       AND r.started_at > v_now - make_interval(secs => a_rper[i] / 1000.0)
                     LIMIT a_rlimit[i]) z;
                v_used := v_used || jsonb_build_object(v_gate, v_n);
            END IF;
            v_n := least(coalesce((v_caps ->> v_gate)::integer, 2147483647),
                         greatest(a_rlimit[i] - (v_used ->> v_gate)::integer, 0));
            v_caps := v_caps || jsonb_build_object(v_gate, v_n);
            v_cap := least(v_cap, v_n);
        END IF;
        IF v_cap > 0 THEN
            l_topic := l_topic || a_topic[i];
            l_tenant := l_tenant || a_tenant[i];
            l_ckey := l_ckey || a_ckey[i];
            l_rkey := l_rkey || a_rkey[i];
            l_cap := l_cap || v_cap;
        END IF;
    END LOOP;
    FOR c IN
        -- 5. Up to `cap` jobs of each open lane in (priority, available_at) order, one
        -- index walk each that LIMIT stops early. SKIP LOCKED: concurrent claimers take
        -- disjoint rows instead of queueing behind each other; rows the filters below drop
        -- are unlocked at commit, claimable again at once.
        WITH lanes AS (
            SELECT * FROM unnest(l_topic, l_tenant, l_ckey, l_rkey, l_cap)
                       AS x(topic, tenant_id, ckey, rkey, cap)
        ), candidates AS (
            SELECT p.*
              FROM lanes ln
             CROSS JOIN LATERAL (
                   SELECT j.tenant_id, j.job_id, j.priority, j.available_at,
                          j.concurrency_key, j.rate_key
                     FROM warden.jobs j
                    WHERE j.status = 'pending' AND j.topic = ln.topic
                      AND j.tenant_id = ln.tenant_id AND j.concurrency_key = ln.ckey
                      AND j.rate_key = ln.rkey
                      AND j.available_at <= v_now
                      -- one primary-key probe per candidate row
                      AND j.policy_snapshot_hash IS NOT DISTINCT FROM (
                          SELECT a.snapshot_hash FROM warden.policy_active a
                           WHERE a.tenant_id = j.tenant_id)
                    ORDER BY j.priority, j.available_at
                    LIMIT ln.cap
                      FOR UPDATE OF j SKIP LOCKED) p
        ), keyed AS (
            -- several lanes (topics, rate keys) may share one key: its capacity is shared
            SELECT k.*,
                   row_number() OVER (PARTITION BY k.tenant_id, k.concurrency_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_c,
                   row_number() OVER (PARTITION BY k.tenant_id, k.rate_key
                                      ORDER BY k.priority, k.available_at, k.job_id) AS n_r
              FROM candidates k
        ), allowed AS (
            -- fair tenants: each tenant's best job ranks 1, its second 2, ...; a batch
            -- takes every tenant's rank 1 before anyone's rank 2, so one tenant's backlog
            -- delays another tenant's job by at most one batch
            SELECT a.*, row_number() OVER (PARTITION BY a.tenant_id
                                           ORDER BY a.priority, a.available_at) AS n_t
              FROM keyed a
             WHERE (a.concurrency_key = '' OR a.n_c <= (v_caps ->> concat_ws(
                        chr(31), 'c', a.tenant_id, a.concurrency_key))::integer)
               AND (a.rate_key = '' OR a.n_r <= (v_caps ->> concat_ws(
                        chr(31), 'r', a.tenant_id, a.rate_key))::integer)
        ), picked AS (
            SELECT f.tenant_id, f.job_id, f.concurrency_key, f.n_c FROM allowed f
             ORDER BY f.n_t, f.priority, f.available_at
             LIMIT claim_jobs.max_jobs
        ), claimed AS (
            UPDATE warden.jobs j
               SET status = 'running', worker = claim_jobs.worker,
                   lease_token = gen_random_uuid(), started_at = v_now,
                   -- the n-th job of a key takes the n-th free place of the stripes held
                   concurrency_stripe = CASE WHEN p.concurrency_key <> '' THEN
                       (v_slots -> concat_ws(chr(31), 'c', p.tenant_id, p.concurrency_key)
                                ->> (p.n_c - 1)::integer)::smallint END,
                   deadline_at = v_now + make_interval(secs => j.timeout_ms / 1000.0),
                   lease_expires_at = least(v_now + claim_jobs.lease,
                                            v_now + make_interval(secs => j.timeout_ms / 1000.0))
              FROM picked p
             WHERE j.tenant_id = p.tenant_id AND j.job_id = p.job_id
            RETURNING j.*
        )
        -- runs are locked in (tenant, run) order: two claimers holding disjoint jobs of
        -- the same runs then never wait on each other in a cycle
        SELECT * FROM claimed k ORDER BY k.tenant_id, k.run_id, k.job_id
    LOOP
        -- Each run is locked once per claim, and the events of all the claim's runs are
        -- appended in one call at its end (append_events_for_runs_unscoped: one INSERT;
        -- unscoped, as a worker session carries no tenant scope: the grants were checked
        -- above), not once per claimed job: a fan-out's workers and its scheduler would
        -- queue on the run row for each.
        IF v_run IS DISTINCT FROM c.run_id OR v_tenant IS DISTINCT FROM c.tenant_id THEN
            IF v_run IS NOT NULL THEN
                v_batch := v_batch || jsonb_build_array(jsonb_build_object(
                    'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
            END IF;
            v_tenant := c.tenant_id;
            v_run := c.run_id;
            v_events := '[]';
            -- under the run's lock: a run cancelled (or otherwise ended) while this claim
            -- waited does not hand its job out; the job ends cancelled instead
            SELECT r.status INTO v_run_status FROM warden.runs r
             WHERE r.tenant_id = c.tenant_id AND r.run_id = c.run_id
               FOR NO KEY UPDATE;
        END IF;
        IF v_run_status IN ('succeeded', 'failed', 'denied', 'cancelled', 'timed_out') THEN
            UPDATE warden.jobs j SET status = 'cancelled', finished_at = v_now,
                   error = jsonb_build_object('type', 'RunEnded', 'run_status', v_run_status)
             WHERE j.tenant_id = c.tenant_id AND j.job_id = c.job_id;
            v_events := v_events || jsonb_build_array(jsonb_build_object(
                'kind', 'job.cancelled', 'step_id', c.step_id, 'job_id', c.job_id,
                'attempt', c.attempt, 'actor', claim_jobs.worker,
                'data', jsonb_build_object('reason', 'run ended before the claim completed')));
            CONTINUE;
        END IF;
        v_events := v_events || jsonb_build_array(jsonb_build_object(
            'kind', 'job.claimed', 'step_id', c.step_id, 'job_id', c.job_id,
            'attempt', c.attempt, 'actor', claim_jobs.worker,
            'data', jsonb_build_object('lease_expires_at', c.lease_expires_at)));
        job_id := c.job_id; run_id := c.run_id; step_id := c.step_id; attempt := c.attempt;
        topic := c.topic; input := c.input; upstream := c.upstream; checkpoint := c.checkpoint;
        constraints := c.constraints; lease_token := c.lease_token;
        lease_expires_at := c.lease_expires_at; tenant_id := c.tenant_id;
        available_at := c.available_at; started_at := c.started_at;
        traceparent := c.traceparent;
        RETURN NEXT;
    END LOOP;
    IF v_run IS NOT NULL THEN
        v_batch := v_batch || jsonb_build_array(jsonb_build_object(
            'tenant_id', v_tenant, 'run_id', v_run, 'events', v_events));
        PERFORM warden.append_events_for_runs_unscoped(v_batch);
    END IF;
END $$;

DROP FUNCTION warden.advance_claim_marks();
DROP FUNCTION warden.claim_marks_on_update();
DROP FUNCTION warden.claim_marks_on_insert();
DROP FUNCTION warden.lower_claim_mark(text, text, text, text, smallint, timestamptz);
DROP FUNCTION warden.claim_floor(text, text, text, text);
DROP TABLE warden.claim_marks;
RESET ROLE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
