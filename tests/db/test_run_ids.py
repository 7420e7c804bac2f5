"""Every way a run comes to be gives it an id of one layout (engine/core/ids.py
new_run_id, docs/design.md#run-ids): the minute block first, so the runs of one minute
share a narrow part of every index keyed by run id, and the rest random. A path that
made its own id (a uuid4 in Python, the column's random default in SQL) would scatter
its runs over those indexes again; these tests name each path.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import pytest

from engine.core import ids
from engine.governance.policy import Verdict
from engine.runs import lifecycle, reruns, stopping
from engine.runs.lifecycle import StartItem
from engine.runs.services import Services
from engine.scheduling.scheduler import with_start_dispatch
from engine.store import Database
from tests import support

pytestmark = pytest.mark.anyio

ONE = """
id: one
name: one
version: 1.0.0
steps:
  a: {type: job, topic: t.one}
"""

ALLOW = """
default_decision: deny
rules:
  - name: ones
    match: {topics: [t.one]}
    decision: allow
    reason: the test's topic
"""


@pytest.fixture
def svc(db: Database) -> Services:
    """As `warden serve` composes it: starts dispatch their first steps, in one call
    where a start plan covers them."""
    return with_start_dispatch(Services.create(db, policy_default=Verdict.DENY))


@contextmanager
def made_now() -> Iterator[list[UUID]]:
    """Collects run ids; on leaving, each must carry a minute block of the block's span."""
    made: list[UUID] = []
    before = time.time()
    yield made
    blocks = {ids.new_run_id(t).bytes[0] for t in (before, time.time())}
    assert made
    for run_id in made:
        assert (run_id.version, run_id.variant) == (8, uuid.RFC_4122)
        assert run_id.bytes[0] in blocks


async def test_a_start_the_long_way_and_one_in_one_call(
        svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    in_one_call = support.spy_start_planned(monkeypatch)
    await support.activate_policy(svc, ALLOW)
    await support.store(svc.db, ONE)
    with made_now() as made:
        made.append((await support.start(svc, "one")).run_id)  # the long way writes the plan
        made.append((await support.start(svc, "one")).run_id)
    assert in_one_call == [None, made[1]]


async def test_a_batch_start(svc: Services) -> None:
    await support.activate_policy(svc, ALLOW)
    await support.store(svc.db, ONE)
    with made_now() as made:
        results = await lifecycle.start_many(
            svc, tenant_id="default", workflow_id="one", created_by="alice",
            items=[StartItem({"n": n}, f"key-{n}", None, None, None) for n in range(3)])
        made.extend(r.started.run.run_id for r in results if r.started is not None)
    assert len(set(made)) == 3


async def test_a_rerun(svc: Services) -> None:
    await support.activate_policy(svc, ALLOW)
    await support.store(svc.db, ONE)
    run = await support.start(svc, "one")
    await stopping.cancel(svc.db, tenant_id="default", run_id=run.run_id, by="alice")
    with made_now() as made:
        _, started = await reruns.rerun(svc, tenant_id="default", run_id=run.run_id,
                                        from_step="a", created_by="bob")
        made.append(started.run.run_id)
    assert started.run.rerun_of == run.run_id
