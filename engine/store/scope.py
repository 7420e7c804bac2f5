"""Which tenant's rows a database session may see (row-level security, docs/security.md).

Every engine transaction carries a tenant scope in the ``warden.tenant`` setting, which
the policies of sql/grants/30_row_security.sql compare each row's tenant with. The scope
is a context variable, set once where a unit of work starts and carried into every
connection the work takes from the pool:

- an API request: its caller's tenant (``api.auth.authorize``);
- the work that acts across tenants by design, each saying so with `across_tenants` —
  and this list is the whole of it:
  the engine's loops in `warden serve` (scheduler, reaper, reconciler, notifier:
  engine/daemons/serve.py), the CLI's operator commands run on the host
  (engine/cli/database.py), `/metrics`' aggregate gauges (api/routes/health.py), and
  `warden demo` (engine/cli/demo.py), which is all of those in one process.

Unset, the scope is empty and an engine session sees no row at all: a path that forgot to
say whose work it does fails closed. (A superuser or the schema owner is not subject to
row-level security: tests and the demo's embedded superuser see everything regardless.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ACROSS_TENANTS = "*"

_SCOPE: ContextVar[str] = ContextVar("warden_tenant_scope", default="")


def current() -> str:
    return _SCOPE.get()


def set_tenant(tenant_id: str) -> None:
    """Scopes the rest of the current task (an API request) to one tenant."""
    if not tenant_id or tenant_id == ACROSS_TENANTS:
        raise ValueError(f"not a tenant: {tenant_id!r}")
    _SCOPE.set(tenant_id)


def across_tenants() -> None:
    """Declares that the current task (and the tasks it starts) acts across tenants by
    design. Only the callers listed in this module's docstring may say so."""
    _SCOPE.set(ACROSS_TENANTS)


@contextmanager
def scoped(tenant_id: str) -> Iterator[None]:
    """The scope of one block (tests, and tenant-specific work inside a wider task)."""
    token = _SCOPE.set(tenant_id)
    try:
        yield
    finally:
        _SCOPE.reset(token)
