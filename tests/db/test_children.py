"""`workflow` steps against a real database: a child run per attempt, pinned at the
parent's start, its status mapped onto the step, retries as new children, cancel
reaching the child's running job, cycles and depth refused at start
(docs/workflows.md#sub-workflows)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from engine.core.enums import JobStatus, RunStatus, StepStatus
from engine.core.errors import InvalidInput, JobCancelled
from engine.runs import stopping
from engine.runs.subflows import MAX_CHILD_DEPTH
from engine.scheduling.scheduler import Scheduler
from engine.store import Database
from engine.store import runs as runs_q
from tests import support
from tests.roles import LoginRoles, as_role

pytestmark = pytest.mark.anyio

CHILD = """
id: patch-host
name: patch one host
version: 1.0.0
output: {host: "${steps.apply.output.host}", done: true}
steps:
  apply: {type: job, topic: t.apply, input: {host: "${input.host}"}}
"""

CHILD_V2 = CHILD.replace("version: 1.0.0", "version: 2.0.0").replace("done: true",
                                                                     "done: v2")

PARENT = """
id: parent
name: parent
version: 1.0.0
steps:
  patch:
    type: workflow
    workflow: patch-host
    input: {host: "${input.host}"}
    retries: {max_attempts: 2}
  after: {type: job, topic: t.after, depends_on: [patch],
          input: {child: "${steps.patch.output}"}}
"""


async def _children(db: Database, run_id: Any, tenant: str = "default") -> list[Any]:
    async with db.connection() as conn:
        return await runs_q.children_of_run(conn, tenant, run_id)


async def test_a_child_runs_pinned_at_the_parents_start_and_its_output_goes_up(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    await support.store(db, CHILD_V2)  # stored after the parent started: not used
    await support.settle(scheduler)
    [child] = await _children(db, run.run_id)
    assert (child.workflow_id, child.workflow_version) == ("patch-host", "1.0.0")
    assert (child.parent_step_id, child.parent_attempt, child.depth) == ("patch", 1, 1)
    assert child.input == {"host": "h1"} and child.created_by == run.created_by
    [job] = await support.claim(db, ["t.apply"])
    assert job.run_id == child.run_id
    await support.complete(db, job, {"host": "h1"})
    await support.settle(scheduler)
    [after] = await support.claim(db, ["t.after"])
    assert after.input == {"child": {"host": "h1", "done": True}}
    kinds = await support.kinds(db, run.run_id)
    assert "child.started" in kinds and "child.ended" in kinds
    child_created = (await support.events(db, child.run_id))[0]
    assert child_created.data["parent_run_id"] == str(run.run_id)


async def test_a_failed_child_is_retried_as_a_new_child(db: Database,
                                                        scheduler: Scheduler) -> None:
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.apply"])
    await support.fail(db, job, retryable=False)
    await support.settle(scheduler)
    first, second = await _children(db, run.run_id)
    assert first.status is RunStatus.FAILED and second.parent_attempt == 2
    [job] = await support.claim(db, ["t.apply"])
    assert job.run_id == second.run_id
    await support.complete(db, job, {"host": "h1"})
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert (patch.status, patch.attempts) == (StepStatus.SUCCEEDED, 2)


async def test_a_child_failing_after_the_retries_fails_the_step(db: Database,
                                                                scheduler: Scheduler) -> None:
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    for _ in range(2):
        await support.settle(scheduler)
        [job] = await support.claim(db, ["t.apply"])
        await support.fail(db, job, retryable=False)
    await support.settle(scheduler)
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.FAILED
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert patch.error["type"] == "ChildRunEnded" and patch.error["status"] == "failed"


async def test_cancelling_the_parent_reaches_the_childs_running_job(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.apply"])
    await stopping.cancel(db, tenant_id="default", run_id=run.run_id, by="op")
    [child] = await _children(db, run.run_id)
    assert child.status is RunStatus.CANCELLED
    child_detail = await support.detail(db, child.run_id)
    assert [j.status for j in child_detail.jobs] == [JobStatus.CANCELLED]
    with pytest.raises(JobCancelled):
        await support.complete(db, job)
    await support.settle(scheduler)
    assert (await support.detail(db, run.run_id)).run.status is RunStatus.CANCELLED


CYCLE_A = """
id: wf-a
name: a
version: 1.0.0
steps:
  call_b: {type: workflow, workflow: wf-b}
"""
CYCLE_B = """
id: wf-b
name: b
version: 1.0.0
steps:
  call_a: {type: workflow, workflow: wf-a}
"""


async def test_a_cycle_of_workflows_is_refused_at_start_with_the_chain_named(
        db: Database) -> None:
    await support.store(db, CYCLE_A)
    await support.store(db, CYCLE_B)
    with pytest.raises(InvalidInput) as refused:
        await support.start(db, "wf-a", {})
    assert refused.value.field == "steps.call_a.workflow"
    assert "a cycle of workflows: wf-a@1.0.0 -> wf-b@1.0.0 (step call_a) -> wf-a@1.0.0" \
        in str(refused.value)
    async with db.connection() as conn:  # refused: nothing was created
        assert await conn.execute("SELECT count(*) FROM warden.runs") is not None


async def test_nesting_deeper_than_the_limit_is_refused_at_start(db: Database) -> None:
    leaf = "id: lvl0\nname: l\nversion: 1.0.0\nsteps:\n  s: {type: job, topic: t.x}\n"
    await support.store(db, leaf)
    for level in range(1, MAX_CHILD_DEPTH + 2):
        await support.store(db, f"id: lvl{level}\nname: l\nversion: 1.0.0\nsteps:\n"
                                f"  down: {{type: workflow, workflow: lvl{level - 1}}}\n")
    await support.start(db, f"lvl{MAX_CHILD_DEPTH}", {})  # exactly the limit: fine
    with pytest.raises(InvalidInput, match=f"deeper than {MAX_CHILD_DEPTH} levels: "
                                           f"lvl{MAX_CHILD_DEPTH + 1}@1.0.0 -> "):
        await support.start(db, f"lvl{MAX_CHILD_DEPTH + 1}", {})


async def test_a_child_is_in_its_parents_tenant_and_the_database_insists(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    await support.store(db, CHILD, tenant="acme")
    await support.store(db, PARENT, tenant="acme")
    run = await support.start(db, "parent", {"host": "h1"}, tenant="acme")
    await support.settle(scheduler)
    [child] = await _children(db, run.run_id, tenant="acme")
    assert child.tenant_id == "acme"
    assert await _children(db, run.run_id, tenant="default") == []
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute(  # a child of acme's run in another tenant: no such parent there
            "INSERT INTO warden.workflows SELECT 'other', workflow_id, version, version_major,"
            " version_minor, version_patch, version_pre, name, definition, digest, source,"
            " created_by, created_at FROM warden.workflows WHERE tenant_id = 'acme'"
            " AND workflow_id = 'patch-host'")
        conn.execute(
            "INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, request_digest,"
            " created_by, parent_run_id, parent_step_id, parent_attempt, depth)"
            " VALUES ('other', 'patch-host', '1.0.0', 'x', 'eve', %s, 'patch', 9, 1)",
            [run.run_id])


FOR_EACH_PARENT = """
id: fleet
name: fleet
version: 1.0.0
steps:
  each:
    type: workflow
    workflow: patch-host
    for_each: "${input.hosts}"
    max_parallel: 2
    input: {host: "${item}"}
"""


async def test_for_each_on_a_workflow_step_starts_one_child_per_item(
        db: Database, scheduler: Scheduler) -> None:
    await support.store(db, CHILD)
    await support.store(db, FOR_EACH_PARENT)
    run = await support.start(db, "fleet", {"hosts": ["a", "b", "c"]})
    await support.settle(scheduler)
    assert len(await _children(db, run.run_id)) == 2  # max_parallel
    for _ in range(4):
        for job in await support.claim(db, ["t.apply"]):
            await support.complete(db, job, {"host": job.input["host"]})
        await support.settle(scheduler)
    kids = await _children(db, run.run_id)
    assert [(k.parent_item_index, k.input) for k in kids] == [
        (0, {"host": "a"}), (1, {"host": "b"}), (2, {"host": "c"})]
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.SUCCEEDED
    assert detail.run.output == {"each": [{"host": h, "done": True} for h in "abc"]}


async def test_a_rerun_from_a_workflow_step_starts_a_new_child_of_the_pinned_version(
        db: Database, scheduler: Scheduler) -> None:
    from engine.runs import reruns
    await support.store(db, CHILD)
    await support.store(db, PARENT.replace("max_attempts: 2", "max_attempts: 1"))
    run = await support.start(db, "parent", {"host": "h1"})
    await support.settle(scheduler)
    [job] = await support.claim(db, ["t.apply"])
    await support.fail(db, job, retryable=False)
    await support.settle(scheduler)
    await support.store(db, CHILD_V2)
    svc = support.services(db)
    plan = await reruns.plan(svc, tenant_id="default", run_id=run.run_id, from_step="patch")
    assert plan.flow == {"patch": "starts a new child run of patch-host@1.0.0 (the version "
                                   "pinned by the run)"}
    _, started = await reruns.rerun(svc, tenant_id="default", run_id=run.run_id,
                                    from_step="patch", created_by="bob")
    await support.settle(scheduler)
    [child] = await _children(db, started.run.run_id)
    assert (child.workflow_version, child.created_by) == ("1.0.0", "bob")


async def test_parent_and_child_link_both_ways_and_one_attempt_has_one_child(
        db: Database, scheduler: Scheduler, db_url: str) -> None:
    from engine.runs import views
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    await support.settle(scheduler)
    [child] = await _children(db, run.run_id)
    parent_doc = views.run_detail(await support.detail(db, run.run_id))
    assert [c["run_id"] for c in parent_doc["children"]] == [str(child.run_id)]
    patch = next(s for s in parent_doc["steps"] if s["step_id"] == "patch")
    assert patch["children"][0]["run_id"] == str(child.run_id)
    child_doc = views.run_detail(await support.detail(db, child.run_id))
    assert (child_doc["parent_run_id"], child_doc["parent_step_id"]) == (str(run.run_id),
                                                                         "patch")
    # a second serve starting the same attempt's child is refused by the database
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO warden.runs (tenant_id, workflow_id, workflow_version, request_digest,"
            " created_by, parent_run_id, parent_step_id, parent_attempt, depth)"
            " VALUES ('default', 'patch-host', '1.0.0', 'x', 'alice', %s, 'patch', 1, 1)",
            [run.run_id])


async def test_items_and_children_are_seen_in_their_tenant_only(
        db: Database, scheduler: Scheduler, db_url: str, login_roles: LoginRoles) -> None:
    for tenant in ("t1", "t2"):
        await support.store(db, CHILD, tenant=tenant)
        await support.store(db, FOR_EACH_PARENT, tenant=tenant)
        await support.start(db, "fleet", {"hosts": ["a", "b"]}, tenant=tenant)
    await support.settle(scheduler)
    with psycopg.connect(as_role(db_url, login_roles.engine), autocommit=True) as conn:
        def tenants(sql: str) -> set[str]:
            return {r[0] for r in conn.execute(sql)}

        items = "SELECT tenant_id FROM warden.step_items"
        children = "SELECT tenant_id FROM warden.runs WHERE parent_run_id IS NOT NULL"
        assert tenants(items) == tenants(children) == set()  # no scope: no row
        conn.execute("SELECT set_config('warden.tenant', 't1', false)")
        assert tenants(items) == tenants(children) == {"t1"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK
            conn.execute("INSERT INTO warden.step_items (tenant_id, run_id, step_id, item_index)"
                         " SELECT 't2', run_id, step_id, 99 FROM warden.step_items LIMIT 1")


async def test_a_child_denied_at_its_submit_gate_denies_the_parents_step(
        db: Database) -> None:
    from engine.governance import decisions
    from engine.governance.policy import Verdict
    from engine.runs.services import Services
    stored = await decisions.store_bundle(db, tenant_id="default", media_type=None,
                                          created_by="admin", source="""
default_decision: allow
rules:
  - name: no-apply
    match: {topics: ["t.apply"]}
    decision: deny
    reason: frozen
""")
    await decisions.activate(db, tenant_id="default", snapshot_hash=stored.row.snapshot_hash,
                             activated_by="admin")
    sched = Scheduler(Services.create(db, policy_default=Verdict.ALLOW))
    await support.store(db, CHILD)
    await support.store(db, PARENT)
    run = await support.start(db, "parent", {"host": "h1"})
    await support.settle(sched)
    [child] = await _children(db, run.run_id)
    assert child.status is RunStatus.DENIED  # its own submit gate, as for any start
    detail = await support.detail(db, run.run_id)
    assert detail.run.status is RunStatus.DENIED
    patch = next(s for s in detail.steps if s.step_id == "patch")
    assert (patch.status, patch.attempts) == (StepStatus.DENIED, 1)  # denial is not retried
    assert patch.error["child_run_id"] == str(child.run_id)
