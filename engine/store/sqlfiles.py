"""Loads the named queries of `sql/queries/*.sql` once into an immutable mapping.

A query starts at a header line ``-- name: <name> :<kind>`` (kind: one, many, exec), is
followed by comment lines describing it, and runs until the next header. Names are
unique across all files; a duplicate or malformed header fails at import, not at use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from engine.core.resources import data_dir

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)\s+:(?P<kind>one|many|exec)\s*$")

Kind = Literal["one", "many", "exec"]


@dataclass(frozen=True)
class NamedQuery:
    name: str
    kind: Kind
    sql: str
    source: str  # file:line, for error messages


def parse_file(path: Path) -> list[NamedQuery]:
    queries: list[NamedQuery] = []
    current: tuple[str, Kind, int] | None = None
    body: list[str] = []

    def flush() -> None:
        if current is None:
            if "".join(body).strip():
                raise ValueError(f"{path}: SQL before the first '-- name:' header")
            return
        name, kind, line = current
        sql = "\n".join(body).strip()
        if not sql:
            raise ValueError(f"{path}:{line}: query {name!r} is empty")
        queries.append(NamedQuery(name, kind, sql, f"{path.name}:{line}"))

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _HEADER.match(line)
        if match:
            flush()
            current = (match["name"], match["kind"], number)  # type: ignore[assignment]
            body = []
        elif line.lstrip().startswith("-- name:"):
            raise ValueError(f"{path}:{number}: malformed query header {line!r}")
        else:
            body.append(line)
    flush()
    return queries


@cache
def queries() -> MappingProxyType[str, NamedQuery]:
    found: dict[str, NamedQuery] = {}
    for path in sorted((data_dir("sql") / "queries").glob("*.sql")):
        for query in parse_file(path):
            if query.name in found:
                first = found[query.name].source
                raise ValueError(f"query {query.name!r} defined twice: {first}, {query.source}")
            found[query.name] = query
    return MappingProxyType(found)


def get(name: str) -> NamedQuery:
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries") from None
