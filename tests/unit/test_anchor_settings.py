"""The anchor settings and the anchor file's own checks (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core import settings
from engine.core.errors import ConfigError
from engine.runs import anchors


def test_anchors_are_off_unless_a_directory_is_set() -> None:
    loaded = settings.load({})
    assert (loaded.audit_anchor_dir, loaded.audit_anchor_interval_s) == (None, 300.0)
    loaded = settings.load({"WARDEN_AUDIT_ANCHOR_DIR": "/var/lib/warden/anchors",
                            "WARDEN_AUDIT_ANCHOR_INTERVAL_S": "60"})
    assert loaded.audit_anchor_dir == Path("/var/lib/warden/anchors")
    assert loaded.audit_anchor_interval_s == 60.0


@pytest.mark.parametrize("raw", ["0", "soon"])
def test_a_bad_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="WARDEN_AUDIT_ANCHOR_INTERVAL_S"):
        settings.load({"WARDEN_AUDIT_ANCHOR_INTERVAL_S": raw})


def test_a_line_that_is_not_json_is_named_by_its_number() -> None:
    key = anchors.anchor_key(b"x" * 32)
    doc = {"v": 1, "kind": "heads", "n": 1, "prev": anchors.GENESIS, "at": "t", "heads": []}
    good = anchors.canonical_json({**doc, "sig": anchors.sign(key, doc)})
    log = anchors.parse(good + "\n{oops\n", key)
    assert [(p.line, p.problem) for p in log.problems or []] == [
        (2, "not an anchor line (bad JSON)")]
