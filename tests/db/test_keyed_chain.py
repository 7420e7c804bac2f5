"""The keyed chain (docs/dba.md, "The keyed chain"): each event's hash is an HMAC under a
key only the schema owner reads. A forger without the key cannot make a rewritten chain
verify; rotation keeps old events verifiable; the migration re-signs existing chains."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from uuid import UUID, uuid4

import anyio
import psycopg
import psycopg.types.json
import pytest
from psycopg import sql

from engine.scheduling.scheduler import Scheduler
from engine.store import Database, migrate
from tests import support

pytestmark = pytest.mark.anyio

WORKFLOW = """
id: one
name: one
version: 1.0.0
steps:
  a: {type: job, topic: t.a}
"""

# What a forger without the key can do best: recompute every hash of the run with the
# formula of the unkeyed chain (sha256 of the same bytes), then move the run's head.
RECOMPUTE_UNKEYED = """
DO $$
DECLARE e record; v_prev text := repeat('0', 64); v_hash text;
BEGIN
    FOR e IN SELECT * FROM warden.timeline WHERE run_id = %(run)s ORDER BY seq LOOP
        v_hash := encode(sha256(warden.event_message(v_prev, e.tenant_id, e.run_id, e.seq,
                      e.at, e.kind, e.step_id, e.job_id, e.attempt, e.actor, e.data)), 'hex');
        UPDATE warden.timeline SET prev_hash = v_prev, hash = v_hash
         WHERE run_id = e.run_id AND seq = e.seq;
        v_prev := v_hash;
    END LOOP;
    UPDATE warden.runs SET timeline_hash = v_prev WHERE run_id = %(run)s;
END $$
"""

# The same with the owner-only keyed warden.event_hash: what only the key holder can do.
RECOMPUTE_KEYED = RECOMPUTE_UNKEYED.replace(
    "encode(sha256(warden.event_message(v_prev, e.tenant_id, e.run_id, e.seq,\n"
    "                      e.at, e.kind, e.step_id, e.job_id, e.attempt, e.actor, e.data)), 'hex')",
    "warden.event_hash(e.key_id, v_prev, e.tenant_id, e.run_id, e.seq, e.at, e.kind,\n"
    "                      e.step_id, e.job_id, e.attempt, e.actor, e.data)")

FORGE_SEQ_1 = ("UPDATE warden.timeline SET actor = 'mallory', data = data || '{\"forged\": true}'"
               " WHERE run_id = %(run)s AND seq = 1")


async def _finished_run(db: Database, scheduler: Scheduler) -> str:
    await support.store(db, WORKFLOW)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.a"])
    await support.complete(db, job)
    await support.settle(scheduler)
    return str(run.run_id)


def _forge(url: str, run_id: str, recompute: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # triggers off, as a superuser
        conn.execute(FORGE_SEQ_1, {"run": run_id})
        conn.execute(recompute.replace("%(run)s", sql.Literal(run_id).as_string(conn)))


def _problems(url: str, run_id: str | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT run_id::text, seq, problem FROM "
                            "warden.timeline_problems(NULL, %s)", [run_id]).fetchall()


def _verify(url: str, run_id: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone()
    assert row is not None
    return bool(row[0])


async def test_a_chain_recomputed_without_the_key_is_caught(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    run_id = await _finished_run(db, scheduler)
    assert _verify(db_url, run_id) and _problems(db_url) == []
    _forge(db_url, run_id, RECOMPUTE_UNKEYED)
    assert not _verify(db_url, run_id)
    [(run, seq, problem)] = _problems(db_url)
    assert (run, seq) == (run_id, 1)
    assert "hash does not match the event" in str(problem)


async def test_the_key_holder_can_recompute_a_chain_so_anchors_are_needed(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    # The limit of a key kept in the database: its owner (or a superuser) can re-sign.
    # tests/db/test_anchors.py shows the anchors outside the database catching this.
    run_id = await _finished_run(db, scheduler)
    _forge(db_url, run_id, RECOMPUTE_KEYED)
    assert _verify(db_url, run_id)


@pytest.fixture
def writer(db_url: str) -> Iterator[str]:
    """A role that can write the timeline and the runs' heads but does not own the schema
    (the shape of an engine or worker role): the connection URL to act as it."""
    role = f"warden_test_writer_{uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        ident = sql.Identifier(role)
        # an engine-like role (row-level security scoped to every tenant) that may also
        # insert into the timeline and move the runs' heads, as no Warden role may
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE warden_engine").format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} SET warden.tenant = '*'").format(ident))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA warden TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON warden.timeline TO {}").format(ident))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON warden.runs TO {}").format(ident))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION warden.verify_timeline(uuid), "
                             "warden.timeline_problems(text, uuid) TO {}").format(ident))
    try:
        yield db_url.replace("postgres@", f"{role}@", 1)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize("attempt", [
    "SELECT k_ipad FROM warden.chain_keys",
    "SELECT * FROM warden.timeline_check",
    "SELECT warden.event_hash(1, '', 'default', gen_random_uuid(), 1, now(), 'run.created',"
    " NULL, NULL, NULL, 'mallory', '{}')",
    # (warden.append_events is the engine's to call: it signs what it appends, under the
    # run's lock, and hands no MAC back)
    "SELECT warden.rotate_chain_key('mallory')",
])
def test_a_role_without_the_key_cannot_read_it_or_get_a_mac(writer: str, attempt: str) -> None:
    assert "postgres@" not in writer
    with psycopg.connect(writer) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(attempt)


async def test_a_writer_without_the_key_can_still_verify_but_not_forge(
        db: Database, scheduler: Scheduler, db_url: str, writer: str) -> None:
    run_id = await _finished_run(db, scheduler)
    with psycopg.connect(writer, autocommit=True) as conn:
        assert conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone() == (True,)
        # appending a forged event after the head, chained with plain sha256
        last = conn.execute("SELECT seq, hash, key_id FROM warden.timeline WHERE run_id = %s"
                            " ORDER BY seq DESC LIMIT 1", [run_id]).fetchone()
        assert last is not None
        conn.execute(
            "INSERT INTO warden.timeline (tenant_id, run_id, seq, at, kind, actor, data,"
            " prev_hash, hash, key_id, run_created_at) SELECT 'default', %(run)s, %(seq)s,"
            " now(), 'run.rerun', 'mallory', '{}', %(prev)s, encode(sha256("
            "warden.event_message(%(prev)s, 'default', %(run)s, %(seq)s, now(), 'run.rerun',"
            " NULL, NULL, NULL, 'mallory', '{}')), 'hex'), %(key)s, (SELECT created_at FROM"
            " warden.runs WHERE run_id = %(run)s)",
            {"run": run_id, "seq": last[0] + 1, "prev": last[1], "key": last[2]})
        conn.execute("UPDATE warden.runs SET timeline_seq = timeline_seq + 1, timeline_hash ="
                     " (SELECT hash FROM warden.timeline WHERE run_id = %(run)s ORDER BY seq"
                     " DESC LIMIT 1) WHERE run_id = %(run)s", {"run": run_id})
        assert conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone() == (False,)
        [(_, _, seq, problem)] = conn.execute(
            "SELECT * FROM warden.timeline_problems(NULL, %s)", [run_id]).fetchall()
    assert seq == last[0] + 1 and "hash does not match" in problem


async def test_events_signed_under_two_keys_verify_after_a_rotation(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    await support.store(db, WORKFLOW)
    run = await support.start(db, "one")
    await support.settle(scheduler)
    with psycopg.connect(db_url, autocommit=True) as conn:
        [(old,)] = conn.execute("SELECT key_id FROM warden.chain_keys"
                                " WHERE retired_at IS NULL").fetchall()
        [(new,)] = conn.execute("SELECT warden.rotate_chain_key('test')").fetchall()
        assert new != old
    [job] = await support.claim(db, ["t.a"])
    await support.complete(db, job)
    await support.settle(scheduler)
    with psycopg.connect(db_url, autocommit=True) as conn:
        keys = conn.execute("SELECT key_id, count(*) FROM warden.timeline WHERE run_id = %s"
                            " GROUP BY key_id ORDER BY key_id", [run.run_id]).fetchall()
        assert [k for k, _ in keys] == [old, new]
        assert conn.execute("SELECT key_id FROM warden.chain_keys WHERE retired_at IS NULL"
                            ).fetchall() == [(new,)]
        # the retired key cannot be dropped: its events would become unverifiable
        with pytest.raises(psycopg.Error, match="append-only"):
            conn.execute("DELETE FROM warden.chain_keys WHERE key_id = %s", [old])
    assert _verify(db_url, str(run.run_id))
    assert _problems(db_url) == []


async def test_the_migration_re_signs_chains_that_held_and_leaves_broken_ones_broken(
        empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url, "0005_traceparent")  # the revision before the keyed chain
    # the workflow, runs and unkeyed chains written with that revision's own SQL (today's
    # engine writes columns and tables of later revisions)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO warden.workflows (tenant_id, workflow_id, version, version_major, "
            "version_minor, version_patch, name, definition, digest, source, created_by) "
            "VALUES ('default', 'one', '1.0.0', 1, 0, 0, 'one', '{}', 'd', '', 'author')")
        good, bad = (_unkeyed_run(conn), _unkeyed_run(conn))
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE warden.timeline SET actor = 'mallory' WHERE run_id = %s AND seq = 1",
                     [bad.run_id])
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM warden.timeline WHERE key_id IS NULL"
                            ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM warden.chain_keys").fetchone() == (1,)
    assert _verify(empty_db_url, str(good.run_id))
    assert [(seq, "hash does not match" in str(p)) for _, seq, p in _problems(empty_db_url)
            ] == [(1, True)]
    # and back: the downgrade re-hashes unkeyed what verified keyed
    migrate.downgrade(empty_db_url, "0001_baseline")
    _assert_unkeyed(empty_db_url, str(good.run_id), True)
    _assert_unkeyed(empty_db_url, str(bad.run_id), False)


@dataclass(frozen=True)
class _Run:
    run_id: UUID


def _unkeyed_run(conn: psycopg.Connection[tuple[object, ...]]) -> _Run:
    row = conn.execute(
        "INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, request_digest,"
        " created_by) VALUES ('default', 'one', '1.0.0', 'x', 'test') RETURNING run_id"
        ).fetchone()
    assert row is not None
    for kind in ("run.created", "run.started", "step.ready", "run.succeeded"):
        conn.execute("SELECT warden.append_event('default', %s, %s, NULL, NULL, NULL, 'test',"
                     " '{}')", [row[0], kind])
    return _Run(row[0])


def _assert_unkeyed(url: str, run_id: str, ok: bool) -> None:
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT warden.verify_timeline(%s)", [run_id]).fetchone() == (ok,)


async def test_a_batch_append_locks_its_runs_in_key_order_whatever_the_batch_order(
        db: Database, db_url: str) -> None:
    """append_events_for_runs_unscoped takes its run locks in (tenant, run) order, as every
    multi-run writer does, so two writers of the same runs never wait on each other in a
    cycle: given [second, first], it locks first before it waits for second."""
    await support.store(db, WORKFLOW)
    first, second = sorted([(await support.start(db, "one")).run_id for _ in range(2)])
    batch = psycopg.types.json.Jsonb([
        {"tenant_id": "default", "run_id": str(run_id),
         "events": [{"kind": "job.claimed", "actor": "w", "data": {}}]}
        for run_id in (second, first)])
    async with await psycopg.AsyncConnection.connect(db_url) as holder, \
            await psycopg.AsyncConnection.connect(db_url) as appender, \
            await psycopg.AsyncConnection.connect(db_url) as probe:
        await holder.execute("SELECT 1 FROM warden.runs WHERE run_id = %s FOR UPDATE",
                             [second])

        async def append() -> None:
            await appender.execute("SELECT warden.append_events_for_runs_unscoped(%s)",
                                   [batch])

        async def waiting() -> bool:
            cur = await probe.execute("SELECT %s = ANY (pg_blocking_pids(%s))",
                                      [holder.info.backend_pid, appender.info.backend_pid])
            row = await cur.fetchone()
            await probe.rollback()
            return bool(row and row[0])

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(append)
            await support.wait_for(waiting, timeout=10, what="the append to wait for second")
            # first is already the appender's: taken before it waited, in key order
            with pytest.raises(psycopg.errors.LockNotAvailable):
                await probe.execute("SELECT 1 FROM warden.runs WHERE run_id = %s "
                                    "FOR UPDATE NOWAIT", [first])
            await probe.rollback()
            await holder.rollback()
        await appender.commit()
    for run_id in (first, second):
        assert (await support.kinds(db, run_id))[-1] == "job.claimed"


async def test_a_one_run_batch_appends_as_the_batch_path_would(
        db: Database, db_url: str) -> None:
    """append_events_for_runs_unscoped hands a one-run batch to the single-run append
    (migration 0034): the events land at the next seqs, chained and verifying, the head
    moves, an empty one-run batch changes nothing, and a run that is not there is refused
    with the batch path's WD404, writing nothing."""
    await support.store(db, WORKFLOW)
    run_id = (await support.start(db, "one")).run_id
    before = await support.kinds(db, run_id)
    events = [{"kind": "job.claimed", "actor": "w", "data": {"n": n}} for n in (1, 2)]

    def batch(run: UUID, evs: list[dict[str, object]]) -> psycopg.types.json.Jsonb:
        return psycopg.types.json.Jsonb([{"tenant_id": "default", "run_id": str(run),
                                          "events": evs}])

    append = "SELECT warden.append_events_for_runs_unscoped(%s)"
    with psycopg.connect(db_url) as conn:  # one transaction: its function counts
        conn.execute("SET LOCAL track_functions = 'all'")
        conn.execute(append, [batch(run_id, events)])
        calls = conn.execute(
            "SELECT pg_stat_get_xact_function_calls(%s::regprocedure),"
            " pg_stat_get_xact_function_calls(%s::regprocedure)",
            ["warden.append_events_unscoped(text, uuid, jsonb)",
             "warden.chain_events_for_runs(jsonb)"]).fetchone()
        assert calls == (1, None)  # the single-run append, not the batch's chain
        conn.commit()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(append, [batch(run_id, [])])
        with pytest.raises(psycopg.DatabaseError) as missing:
            conn.execute(append, [batch(uuid4(), events)])
        assert missing.value.sqlstate == "WD404"
        seqs = conn.execute("SELECT seq, data FROM warden.timeline WHERE run_id = %s "
                            "ORDER BY seq", [run_id]).fetchall()
        head = conn.execute("SELECT timeline_seq, timeline_hash FROM warden.runs "
                            "WHERE run_id = %s", [run_id]).fetchone()
        last = conn.execute("SELECT hash FROM warden.timeline WHERE run_id = %s "
                            "ORDER BY seq DESC LIMIT 1", [run_id]).fetchone()
    assert [s for s, _ in seqs] == list(range(1, len(before) + 3))
    assert [d for _, d in seqs[-2:]] == [{"n": 1}, {"n": 2}]
    assert head is not None and last is not None
    assert head == (len(before) + 2, last[0])
    assert _verify(db_url, str(run_id))
