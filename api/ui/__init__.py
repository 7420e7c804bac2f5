"""The operator web page at ``/ui``: runs, their DAG and timeline, the approvals queue.

The server renders page shells only (headings, labels, empty regions); the browser asks
for the operator's API key once, keeps it in ``sessionStorage`` and fetches every piece
of data through the JSON API with ``X-API-Key``/``X-Tenant-ID`` headers, so pages carry
no tenant data and the key never reaches a cookie, a URL or a server log.

Two read-only JSON routes under ``/ui/api`` fill what ``/api/v1`` does not answer in one
call (a run's policy decisions; what an approval lets run, rendered by the engine's own
template renderer). They authorize exactly as ``/api/v1`` does.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.ui import data, pages


def ui_routes() -> list[BaseRoute]:
    """The routes to pass to ``create_app(extra_routes=…)``."""
    return [
        Route("/ui", pages.runs_page, methods=["GET"], name="ui-runs"),
        Route("/ui/runs/{run_id}", pages.run_page, methods=["GET"], name="ui-run"),
        Route("/ui/approvals", pages.approvals_page, methods=["GET"], name="ui-approvals"),
        Route("/ui/approvals/{approval_id}", pages.approval_page, methods=["GET"],
              name="ui-approval"),
        Route("/ui/api/runs/{run_id}/decisions", data.run_decisions, methods=["GET"],
              name="ui-run-decisions"),
        Route("/ui/api/approvals/{approval_id}/plan", data.approval_plan, methods=["GET"],
              name="ui-approval-plan"),
        Mount("/ui/static", app=StaticFiles(directory=pages.STATIC), name="ui-static"),
    ]


__all__ = ["ui_routes"]
