-- True when the run's chain is intact: seq gapless from 1, every prev_hash links, every
-- hash recomputes under the key that signed it, and the head stored on the run matches
-- the last event (so a deleted tail is caught too). warden.timeline_problems says what
-- is wrong, and fences it: a run outside the session's tenant scope is not found (WD404).
CREATE OR REPLACE FUNCTION warden.verify_timeline(p_run uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM warden.timeline_problems(NULL, p_run))
$$;
