"""The one table of moves (engine/core/states.py): its maps, its docs, its owners, and the
guard that holds every SQL function and engine module to it in the test databases."""

from __future__ import annotations

import importlib
from pathlib import Path

import psycopg
import pytest

from engine.core import states
from engine.core.enums import ApprovalStatus, JobStatus, RunStatus, StepStatus

ROOT = Path(__file__).resolve().parents[2]


def test_docs_states_is_rendered_from_the_table() -> None:
    assert (ROOT / "docs" / "states.md").read_text() == states.render_markdown(), (
        "run: python -m engine.core.states > docs/states.md")


def test_every_owner_exists() -> None:
    for move in states.MOVES:
        for owner in move.owners:
            if owner.startswith("warden."):
                name = owner.removeprefix("warden.")
                assert (ROOT / "sql" / "functions" / f"{name}.sql").is_file(), owner
            else:
                importlib.import_module(owner)


@pytest.mark.parametrize(("entity", "kind"), [
    ("run", RunStatus), ("step", StepStatus), ("job", JobStatus),
    ("approval", ApprovalStatus), ("item", StepStatus)])
def test_moves_name_real_statuses_and_final_ones_never_move(entity: states.Entity,
                                                           kind: type) -> None:
    table = states.transitions(entity)
    for source, targets in table.items():
        kind(source)
        for target in targets:
            kind(target)
    finals = {"succeeded", "failed", "denied", "cancelled", "timed_out", "skipped",
              "approved", "rejected", "expired", "superseded"}
    assert not finals & set(table), f"a final {entity} status moves"


def test_the_guard_refuses_a_move_the_table_does_not_list(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO warden.workflows (tenant_id, workflow_id, version, "
                     "version_major, version_minor, version_patch, name, definition, digest, "
                     "source, created_by) VALUES ('t', 'w', '1.0.0', 1, 0, 0, 'w', '{}', "
                     "'d', 's', 'me')")
        conn.execute("INSERT INTO warden.runs (tenant_id, run_id, workflow_id, "
                     "workflow_version, request_digest, created_by, status, finished_at) "
                     "VALUES ('t', gen_random_uuid(), 'w', '1.0.0', 'd', 'me', 'succeeded', "
                     "now())")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("UPDATE warden.runs SET status = 'running', finished_at = NULL")
        assert raised.value.sqlstate == "WT001"
        assert "run succeeded -> running" in str(raised.value)
