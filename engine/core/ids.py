"""Short ids: the first hex digits of a run or approval id, as the operator page shows
them (8 by default), resolved to the one object they name.

A prefix is a range of uuids (``f20c58b0`` covers ``f20c58b0-0000-…`` to
``f20c58b0-ffff-…``), so it is looked up on the primary key, not by a text scan.
"""

from __future__ import annotations

import re
from uuid import UUID

from engine.core.errors import InvalidInput, NotFound

MIN_PREFIX = 4
_HEX = re.compile(r"^[0-9a-f]+$")


def full(value: str) -> UUID | None:
    """The uuid a value spells in full, None when it is (or may be) a prefix."""
    try:
        return UUID(value)
    except ValueError:
        return None


def prefix_range(value: str, field: str) -> tuple[UUID, UUID]:
    """The lowest and highest uuid starting with ``value`` (dashes optional)."""
    digits = value.strip().lower().replace("-", "")
    if not _HEX.match(digits) or not MIN_PREFIX <= len(digits) <= 32:
        raise InvalidInput(field, f"{value[:40]!r} is neither an id nor an id prefix of "
                                  f"{MIN_PREFIX} to 32 hex digits")
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def one(value: str, found: list[UUID], *, kind: str, field: str) -> UUID:
    """The single match of a prefix; none or several is an error that names them."""
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"no {kind} id starts with {value!r}")
    listed = ", ".join(str(u) for u in found[:10])
    more = " and more" if len(found) > 10 else ""
    raise InvalidInput(field, f"prefix {value!r} matches several {kind}s: {listed}{more}; "
                              "give more digits")
