"""Storing workflow definitions (immutable per version) and loading the pinned ones."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from engine.core.canonical import sha256_hex
from engine.core.errors import Conflict, InvalidDefinition, NotFound
from engine.definitions.model import WorkflowDef, parse_workflow
from engine.store import Conn, Database
from engine.store import event_starts as event_starts_q
from engine.store import schedules as schedules_q
from engine.store import workflows as q
from engine.store.records import WorkflowRow

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@dataclass(frozen=True)
class StoredWorkflow:
    row: WorkflowRow
    created: bool  # False: this exact definition was stored before (an idempotent re-apply)


def _semver(version: str) -> tuple[int, int, int, str | None]:
    match = _SEMVER.match(version)
    if match is None:  # parse_workflow validated it; this guards direct callers
        raise ValueError(f"not a semantic version: {version!r}")
    return int(match[1]), int(match[2]), int(match[3]), match[4]


async def store(db: Database, *, tenant_id: str, source: str | bytes, media_type: str | None,
                created_by: str) -> StoredWorkflow:
    """Validates and stores a definition. Re-storing the same version with the same content
    is a no-op; with other content it is a Conflict: a stored version never changes."""
    workflow = parse_workflow(source, media_type=media_type)
    doc = workflow.to_doc()
    digest = sha256_hex(doc)
    text = source.decode("utf-8") if isinstance(source, bytes) else source
    async with db.transaction() as conn:
        row = await q.insert(conn, tenant_id=tenant_id, workflow_id=workflow.id,
                             version=workflow.version, semver=_semver(workflow.version),
                             name=workflow.name, definition=doc, digest=digest, source=text,
                             created_by=created_by)
        if row is not None:
            await _sync_schedules(conn, workflow, tenant_id)
            return StoredWorkflow(row, created=True)
        existing = await q.get(conn, tenant_id, workflow.id, workflow.version)
    assert existing is not None  # the insert conflicted on exactly this key
    if existing.digest != digest:
        raise Conflict(f"workflow {workflow.id!r} version {workflow.version} is already stored "
                       "with a different definition; stored versions are immutable, so bump "
                       "the version")
    return StoredWorkflow(existing, created=False)


async def _sync_schedules(conn: Conn, workflow: WorkflowDef, tenant_id: str) -> None:
    """The newest version's schedules are the ones in force (docs/workflows.md#schedules);
    storing an older version (a backport) changes none."""
    newest = await q.latest(conn, tenant_id, workflow.id)
    if newest is None or newest.version != workflow.version:
        return
    await schedules_q.sync(conn, tenant_id=tenant_id, workflow_id=workflow.id,
                           version=workflow.version,
                           schedules=[s.to_doc() for s in workflow.schedules])
    # on_event likewise (docs/workflows.md#event-started-runs): the newest version's
    # subscriptions are the active ones
    await event_starts_q.sync(conn, tenant_id=tenant_id, workflow_id=workflow.id,
                              version=workflow.version,
                              on_event=[e.to_doc() for e in workflow.on_event])


async def resolve(conn: Conn, tenant_id: str, workflow_id: str,
                  version: str | None) -> WorkflowRow:
    """The requested version, or the newest one when ``version`` is None."""
    if version is None:
        row = await q.latest(conn, tenant_id, workflow_id)
    else:
        row = await q.get(conn, tenant_id, workflow_id, version)
    if row is None:
        what = f"workflow {workflow_id!r}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    return row


class DefinitionCache:
    """Parsed definitions by (tenant, id, version). Stored versions are immutable, so an
    entry never goes stale; the bound only caps memory."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str, str], WorkflowDef] = OrderedDict()

    async def get(self, conn: Conn, tenant_id: str, workflow_id: str,
                  version: str) -> WorkflowDef:
        key = (tenant_id, workflow_id, version)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        row = await q.get(conn, tenant_id, workflow_id, version)
        if row is None:
            raise NotFound(f"workflow {workflow_id!r} version {version} not found")
        workflow = in_definition_order(row)
        self._entries[key] = workflow
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return workflow


def in_definition_order(row: WorkflowRow) -> WorkflowDef:
    """The stored definition with its steps in the order the author wrote them (ties of
    the topological order included): jsonb keeps keys in its own order, the source text
    keeps the author's. The source is used only if it still means exactly the stored
    definition (same digest); otherwise the jsonb document decides."""
    try:
        parsed = parse_workflow(row.source, media_type=None)
    except InvalidDefinition:
        parsed = None
    if parsed is not None and sha256_hex(parsed.to_doc()) == row.digest:
        return parsed
    return WorkflowDef.from_doc(row.definition)


async def list_latest(db: Database, tenant_id: str) -> list[WorkflowRow]:
    """The newest version of each of the tenant's workflows."""
    async with db.connection() as conn:
        return await q.list_latest(conn, tenant_id)


async def versions(db: Database, tenant_id: str, workflow_id: str) -> list[WorkflowRow]:
    async with db.connection() as conn:
        rows = await q.versions(conn, tenant_id, workflow_id)
    if not rows:
        raise NotFound(f"workflow {workflow_id!r} not found")
    return rows
