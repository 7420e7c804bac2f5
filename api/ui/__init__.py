"""The operator web page at ``/ui``: runs (searched, rerun, cancelled), their DAG and
timeline, the approvals queue, workers and queues.

The server renders page shells only (headings, labels, empty regions); the browser asks
for the operator's API key once, keeps it in ``localStorage`` (shared by the tabs of this
browser, kept across reloads, removed by "Forget key") and fetches every piece of data
through the JSON API with ``X-API-Key``/``X-Tenant-ID`` headers, so pages carry no tenant
data and the key never reaches a cookie, a URL or a server log.

Two read-only JSON routes under ``/ui/api`` fill what ``/api/v1`` does not answer in one
call (a run's policy decisions; what an approval lets run, rendered by the engine's own
template renderer). They authorize exactly as ``/api/v1`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.ui import data, pages

Page = Callable[[Request], Awaitable[Response]]


def ui_routes(*, served_by: str = "serve") -> list[BaseRoute]:
    """The routes to pass to ``create_app(extra_routes=…)``; ``served_by="demo"`` when
    `warden demo` serves them (the page then says "the demo ended" once it stops)."""

    def shell(page: Page) -> Page:
        async def render(request: Request) -> Response:
            request.scope["warden.served_by"] = served_by
            return await page(request)
        return render

    return [
        Route("/ui", shell(pages.runs_page), methods=["GET"], name="ui-runs"),
        Route("/ui/runs/{run_id}", shell(pages.run_page), methods=["GET"], name="ui-run"),
        Route("/ui/approvals", shell(pages.approvals_page), methods=["GET"],
              name="ui-approvals"),
        Route("/ui/approvals/{approval_id}", shell(pages.approval_page), methods=["GET"],
              name="ui-approval"),
        Route("/ui/workers", shell(pages.workers_page), methods=["GET"], name="ui-workers"),
        Route("/ui/api/runs/{run_id}/decisions", data.run_decisions, methods=["GET"],
              name="ui-run-decisions"),
        Route("/ui/api/approvals/{approval_id}/plan", data.approval_plan, methods=["GET"],
              name="ui-approval-plan"),
        Mount("/ui/static", app=StaticFiles(directory=pages.STATIC), name="ui-static"),
    ]


__all__ = ["ui_routes"]
