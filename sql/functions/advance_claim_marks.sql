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
