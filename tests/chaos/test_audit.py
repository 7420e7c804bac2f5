"""The audit every chaos case ends with can fail: on two runs that went well it is clean,
and each way Warden's tables and the handlers' record could disagree is caught."""

from __future__ import annotations

from uuid import uuid4

import pytest

from engine.runs.services import Services
from tests import support
from tests.chaos.conftest import Chaos
from tests.chaos.handlers import COMPLETED
from tests.chaos.harness import (
    Deadline,
    audit,
    lost_runs,
    query,
    serve,
    show,
    wait_until,
    worker_args,
)

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TOPIC = "chaos.audit"
WORKFLOW = f"""
id: audited
name: audited
version: 1.0.0
steps:
  one: {{type: job, topic: {TOPIC}}}
  two: {{type: job, topic: {TOPIC}, depends_on: [one]}}
"""
STEPS = ["one", "two"]


async def test_the_audit_catches_what_the_record_and_the_tables_disagree_on(
        chaos: Chaos, svc: Services, capsys: pytest.CaptureFixture[str]) -> None:
    deadline = Deadline(90)
    await support.store(svc.db, WORKFLOW)
    serve(chaos.procs)
    chaos.procs.warden(*worker_args([TOPIC], "tests.chaos.handlers:work", concurrency=2))
    runs = [(await support.start(svc, "audited", {"marks": str(chaos.marks)})).run_id
            for _ in range(2)]

    async def done() -> bool:
        return await lost_runs(chaos.url, runs, deadline) == {}

    await wait_until(done, deadline, "both runs to succeed", timeout=30)
    clean = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    show(capsys, "audit", clean.figures(len(runs), 0))
    clean.assert_clean()
    assert (clean.completed, clean.re_executions, len(clean.started)) == (4, 0, 4)
    first, second = (str(r) for r in runs)

    # a run acknowledged but unknown to Warden is lost
    ghost = uuid4()
    seen = await audit(chaos.url, chaos.marks, [*runs, ghost], STEPS, deadline)
    assert seen.lost == {str(ghost)}
    assert seen.not_succeeded == {str(ghost): "missing"}
    assert seen.never_completed == [(str(ghost), "one"), (str(ghost), "two")]

    # a step no handler recorded as completed is lost, though Warden says it succeeded,
    # and the result Warden kept for it is backed by nothing
    [record] = chaos.marks.glob("record-*")
    lines = record.read_text().splitlines(keepends=True)
    dropped = next(line for line in lines
                   if line.startswith(COMPLETED) and f" {first}:two@" in line)
    record.write_text("".join(line for line in lines if line != dropped))
    seen = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    assert seen.lost == {first}
    assert seen.never_completed == [(first, "two")]
    assert seen.unrecorded == [f"{first}:two@1"]
    with pytest.raises(AssertionError, match="no handler recorded as completed"):
        seen.assert_clean()
    record.write_text("".join(lines))

    # the same execution recorded as completed twice is not "exactly once"
    record.write_text("".join(lines) + dropped)
    seen = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    assert seen.unrecorded == [f"{first}:two@1"] and not seen.lost
    record.write_text("".join(lines))

    # a step whose stored output names another execution than its job's result: two
    # accepted completions
    await query(chaos.url, "UPDATE warden.steps SET output = output || "
                           "'{\"execution\": \"other\"}' WHERE run_id = %s AND step_id = 'one'",
                [runs[1]])
    seen = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    assert seen.duplicated == {(second, "one"): 2}
    assert not seen.lost and not seen.unrecorded
    with pytest.raises(AssertionError, match="more than one accepted completion"):
        seen.assert_clean()
    await query(chaos.url, "UPDATE warden.steps s SET output = j.result FROM warden.jobs j "
                           "WHERE j.job_id = %s AND s.run_id = j.run_id AND s.step_id = 'one'",
                [f"{second}:one@1"])
    (await audit(chaos.url, chaos.marks, runs, STEPS, deadline)).assert_clean()

    # a result Warden kept (job and step alike) that no handler returned
    await query(chaos.url, "UPDATE warden.jobs SET result = result || "
                           "'{\"execution\": \"forged\"}' WHERE job_id = %s",
                [f"{first}:one@1"])
    await query(chaos.url, "UPDATE warden.steps SET output = output || "
                           "'{\"execution\": \"forged\"}' WHERE run_id = %s "
                           "AND step_id = 'one'", [runs[0]])
    seen = await audit(chaos.url, chaos.marks, runs, STEPS, deadline)
    assert seen.unrecorded == [f"{first}:one@1"]
    assert not seen.duplicated and not seen.lost
    with pytest.raises(AssertionError, match="not show completed exactly once"):
        seen.assert_clean()
