"""Child workflows pinned when a run starts (docs/workflows.md#sub-workflows).

A run that has `workflow` steps resolves, in the transaction that creates it, the
version each of them will start (the step's ``version``, or the newest stored one at
that moment), and the same for those workflows' own `workflow` steps, down the whole
tree: ``runs.pins`` = ``{step_id: {"workflow", "version", "pins"}}``. A child run is
then started, whenever its step becomes ready, with exactly that version and the subtree
below it as its own pins: storing a newer version of a child workflow during a long run
changes nothing in it, as for the run's own definition.

Walking the tree at start is also where a cycle (a workflow that reaches itself, by
id, through its children) and nesting deeper than MAX_CHILD_DEPTH are refused, with the
chain named: the run is not created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.core.enums import StepType
from engine.core.errors import InvalidInput
from engine.definitions.model import WorkflowDef
from engine.definitions.workflows import resolve
from engine.store import Conn

if TYPE_CHECKING:
    from engine.runs.services import Services

MAX_CHILD_DEPTH = 5
"""The most levels of child runs below the run a caller starts."""


async def resolve_pins(svc: Services, conn: Conn, tenant_id: str, workflow: WorkflowDef,
                       *, depth: int = 0, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The pinned child versions of ``workflow``'s workflow steps, recursively.

    ``depth`` is the depth of a run of ``workflow`` (0 for a run a caller starts) and
    ``chain`` the workflows above it. InvalidInput naming the chain on a cycle or past
    MAX_CHILD_DEPTH; NotFound for a child workflow (or version) that is not stored.
    """
    here = (*chain, f"{workflow.id}@{workflow.version}")
    pins: dict[str, Any] = {}
    for step in workflow.steps.values():
        if step.type is not StepType.WORKFLOW:
            continue
        assert step.workflow is not None  # validated: workflow steps name their workflow
        field = f"steps.{step.id}.workflow"
        row = await resolve(conn, tenant_id, step.workflow, step.workflow_version)
        child = await svc.definitions.get(conn, tenant_id, step.workflow, row.version)
        link = _chain(here, step.id, f"{child.id}@{child.version}")
        if any(entry.split("@", 1)[0] == child.id for entry in here):
            raise InvalidInput(field, f"a cycle of workflows: {link}")
        if depth + 1 > MAX_CHILD_DEPTH:
            raise InvalidInput(field, f"child runs nest deeper than {MAX_CHILD_DEPTH} levels: "
                                      f"{link}")
        pins[step.id] = {"workflow": child.id, "version": child.version,
                         "pins": await resolve_pins(svc, conn, tenant_id, child,
                                                    depth=depth + 1, chain=here)}
    return pins


def _chain(here: tuple[str, ...], step_id: str, child: str) -> str:
    return " -> ".join(here) + f" (step {step_id}) -> {child}"
