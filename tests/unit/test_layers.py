"""The engine's layers (docs/design.md, "Layers") hold: import-linter's contracts in
pyproject.toml, run here so the README's test command enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    # a subprocess: import-linter builds its graph from the files on disk and caches
    # nothing between runs that could mask a new import
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports), "--no-cache"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
