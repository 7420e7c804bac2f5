"""bench/statement_times.py's instrumentation: a probe before each top-level statement of
the worker functions, and nothing else changed in their text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.statement_times import _CLAIM_LOOP_BODY, instrument

FUNCTIONS = Path(__file__).resolve().parents[2] / "sql" / "functions"


@pytest.mark.parametrize("name", ["claim_jobs", "complete_jobs"])
def test_probes_go_between_statements_and_change_nothing_else(name: str) -> None:
    source = (FUNCTIONS / f"{name}.sql").read_text()
    extra = {_CLAIM_LOOP_BODY: "loop"} if name == "claim_jobs" else {}
    text, labels = instrument(source, extra)
    lines = text.rstrip("\n").split("\n")
    probes = [i for i, line in enumerate(lines) if "warden_bench_mark(" in line]
    assert len(probes) == len(labels) + 1  # and the one that closes the call
    # without its probes, the text is the function as written
    kept = [line for line in lines if "warden_bench_mark(" not in line]
    assert "\n".join(kept) == source.split("\nREVOKE")[0].rstrip("\n")
    for i in probes:  # each one after a statement or block opener ended, never inside one
        before = next(line.split("--")[0].rstrip() for line in reversed(lines[:i])
                      if line.split("--")[0].strip())
        assert before.endswith((";", "THEN", "LOOP")) or before == "BEGIN", (i, before)
    assert len(labels) >= 6


def test_a_probe_whose_line_is_gone_is_an_error_not_a_silent_gap() -> None:
    source = (FUNCTIONS / "claim_jobs.sql").read_text()
    with pytest.raises(ValueError, match="per_job"):
        instrument(source, {"        -- a comment nobody wrote": "per_job"})
