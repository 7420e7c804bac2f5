"""HTML shells of the operator page: headings, labels and empty regions, no tenant data.

Every page is the same for every caller; `static/warden.js` fills it from the JSON API
with the key the operator typed. Pages are sent with a strict Content-Security-Policy:
scripts and styles from this server only, no inline code, no framing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from engine.core.enums import ApprovalStatus, RunStatus

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _asset_version() -> str:
    """A digest of the static files, appended to their URLs so a new release is fetched."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ASSET_VERSION = _asset_version()


# Run status chips: (label, status, denied_by); a denied run was denied by a policy rule
# or rejected by an approver, and the two are told apart.
RUN_CHIPS = [("all", "", ""), *((s.value, s.value, "") for s in RunStatus),
             ("denied by policy", "denied", "policy"), ("rejected", "denied", "approval")]


def _filters(request: Request, chips: list[tuple[str, str, str]],
             default: str) -> list[dict[str, Any]]:
    """Links for a status filter ("" is all), keeping the page's other search fields."""
    params = request.query_params
    current = (params.get("status", default), params.get("denied_by", ""))
    keep = [(k, v) for k, v in params.multi_items()
            if k not in ("status", "denied_by", "cursor") and v]
    return [{"label": label, "value": status, "current": (status, by) == current,
             "query": urlencode([*keep, ("status", status), *([("denied_by", by)] if by else [])])}
            for label, status, by in chips]


def _render(request: Request, template: str, *, title: str, page: str, nav: str,
            status_code: int = 200, **context: Any) -> Response:
    # "demo" when `warden demo` serves the page: it stops serving once its run ends, and
    # the page says so instead of "the server did not answer".
    served_by = request.scope.get("warden.served_by", "serve")
    return TEMPLATES.TemplateResponse(
        request, template,
        {"title": title, "page": page, "nav": nav, "asset": ASSET_VERSION,
         "served_by": served_by, **context},
        status_code=status_code, headers=HEADERS)


def _uuid(request: Request, name: str) -> str | None:
    try:
        return str(UUID(request.path_params[name]))
    except ValueError:
        return None


def _missing(request: Request, what: str, nav: str) -> Response:
    return _render(request, "missing.html", title="Not found", page="missing", nav=nav,
                   status_code=404, what=what)


async def runs_page(request: Request) -> Response:
    return _render(request, "runs.html", title="Runs", page="runs", nav="runs",
                   filters=_filters(request, RUN_CHIPS, ""),
                   search={k: request.query_params.get(k, "") for k in SEARCH_FIELDS})


SEARCH_FIELDS = ("id_prefix", "workflow_id", "idempotency_key", "created_after",
                 "created_before", "match")


async def run_page(request: Request) -> Response:
    run_id = _uuid(request, "run_id")
    if run_id is None:
        return _missing(request, "run", "runs")
    return _render(request, "run.html", title=f"Run {run_id[:8]}", page="run", nav="runs",
                   run_id=run_id)


async def approvals_page(request: Request) -> Response:
    chips = [("all", "", ""), *((s.value, s.value, "") for s in ApprovalStatus)]
    return _render(request, "approvals.html", title="Approvals", page="approvals",
                   nav="approvals", filters=_filters(request, chips, "pending"))


async def approval_page(request: Request) -> Response:
    approval_id = _uuid(request, "approval_id")
    if approval_id is None:
        return _missing(request, "approval", "approvals")
    return _render(request, "approval.html", title=f"Approval {approval_id[:8]}",
                   page="approval", nav="approvals", approval_id=approval_id)


async def workers_page(request: Request) -> Response:
    return _render(request, "workers.html", title="Workers and queues", page="workers",
                   nav="workers")
