"""Which steps a rerun runs again: a job step that runs again runs after a new decision of
every approval step above it, so those gates and everything behind them run again
(engine/runs/reruns.py, docs/recovery.md)."""

from __future__ import annotations

from engine.definitions.model import parse_workflow
from engine.runs.reruns import gated

TWO_GATES = parse_workflow("""
id: two-gates
name: two gates
version: 1.0.0
steps:
  x: {type: job, topic: t.x}
  g1: {type: approval, depends_on: [x]}
  y: {type: job, topic: t.y, depends_on: [g1]}
  g2: {type: approval}
  z: {type: job, topic: t.z, depends_on: [y, g2]}
  w: {type: job, topic: t.w, depends_on: [g2]}
  n: {type: notify, depends_on: [z]}
""")


def test_a_job_behind_two_gates_asks_both_again_and_reruns_all_behind_them() -> None:
    assert gated(TWO_GATES, {"z", "n"}) == {"g1", "y", "g2", "z", "w", "n"}


def test_a_gate_brought_in_brings_the_gates_above_its_own_work() -> None:
    # w sits behind g2 only; asking g2 again reruns z, which sits behind g1 too
    assert gated(TWO_GATES, {"w"}) == {"g1", "y", "g2", "z", "w", "n"}


def test_work_above_every_gate_and_messages_behind_them_ask_nothing() -> None:
    assert gated(TWO_GATES, {"x"}) == {"x"}
    assert gated(TWO_GATES, {"n"}) == {"n"}  # a notify step is not work behind a gate
