"""Run ids, and short ids: how a run's id is made, and the first hex digits of a run or
approval id, as the operator page shows them (8 by default), resolved to the one object
they name.

A prefix is a range of uuids (``f20c58b0`` covers ``f20c58b0-0000-…`` to
``f20c58b0-ffff-…``), so it is looked up on the primary key, not by a text scan.
"""

from __future__ import annotations

import os
import re
import time
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


# A run id is random but for its first byte, which counts minutes and wraps after 256
# (4 h 16 min). A run's id leads the keys of the run, its steps, its jobs (job_id begins
# with it), its timeline events and its decisions. Fully random, each insert lands on a
# random page of each of those indexes, and once they outgrow memory every insert after a
# checkpoint writes that whole page to the WAL again (a full-page image): with a million
# finished jobs behind them, btree leaf inserts were 79% of the WAL the drain wrote and
# 93% of its full-page images, nearly all in the seven indexes keyed by run id
# (bench/README.md, session 15). With the minute in front, the runs of one minute share
# 1/256 of each index, which stays in memory and is written whole once per checkpoint.
# The other 114 bits stay random, so an id is as hard to guess as before; and over more
# than a few hours the first byte is spread evenly, so an 8-digit short id is as likely
# to be unique as a random id's (2 digits of minute, 6 random: two runs of the same
# minute share one with odds of 1 in 16.7 million). Sequential-UUID generators for
# PostgreSQL use the same rotating time prefix (docs/design.md#run-ids).
RUN_ID_BLOCK_S = 60


def new_run_id(now: float | None = None) -> UUID:
    """A new run id: the minute block (``now``, Unix seconds, default the wall clock),
    then random bits, marked RFC 9562 version 8 (a layout of our own)."""
    raw = bytearray(os.urandom(16))
    raw[0] = int((time.time() if now is None else now) // RUN_ID_BLOCK_S) % 256
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC's variant
    return UUID(bytes=bytes(raw))
