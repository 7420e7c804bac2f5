"""Where the project's non-Python files live: `sql/` and `migrations/`.

In a checkout (and an editable install) they sit beside the `engine` package; a wheel
carries them inside it as `engine/_data/` (see pyproject's force-include).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

# engine/core/resources.py -> engine/
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


@cache
def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"Warden's {name}/ folder is missing from the installation")


def package_file(relative: str) -> Path:
    """A file shipped inside the engine package (e.g. the demo workflow)."""
    return _PACKAGE_DIR / relative
