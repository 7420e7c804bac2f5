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
