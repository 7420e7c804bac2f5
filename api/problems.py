"""Errors as RFC 9457 problem documents (`application/problem+json`), mapped in one place."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from engine.core import errors

PROBLEM_TYPE = "https://warden.dev/problems/"

# (error class, HTTP status, problem type slug); the first matching class wins.
_MAPPING: tuple[tuple[type[errors.WardenError], int, str], ...] = (
    (errors.InvalidDefinition, 422, "invalid-definition"),
    (errors.InvalidInput, 422, "invalid-input"),
    (errors.NotFound, 404, "not-found"),
    (errors.IdempotencyConflict, 409, "idempotency-conflict"),
    (errors.Conflict, 409, "conflict"),
    (errors.InvalidTransition, 409, "invalid-state"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.PolicyDenied, 403, "policy-denied"),
    (errors.LeaseLost, 409, "lease-lost"),
    (errors.DatabaseUnavailable, 503, "database-unavailable"),
    (errors.SchemaMismatch, 503, "schema-mismatch"),
    (errors.ConfigError, 500, "configuration"),
)


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(status: int, slug: str, title: str, detail: str, *,
            errors_: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE + slug, "title": title, "status": status,
                            "detail": detail, **extra}
    if errors_:
        body["errors"] = errors_
    return ProblemResponse(body, status_code=status, headers=headers)


def bad_request(detail: str, field: str | None = None) -> Response:
    # the field is named once: "input.x: NaN is not a JSON number" -> field + message
    message = detail.removeprefix(f"{field}: ") if field else detail
    return problem(400, "bad-request", "Bad request", detail,
                   errors_=[{"field": field, "message": message}] if field else None)


def from_error(exc: errors.WardenError) -> Response:
    status, body, headers = document(exc)
    return ProblemResponse(body, status_code=status, headers=headers)


def document(exc: errors.WardenError) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """The status, problem document and headers an error is answered with (a batch puts
    each item's document in its own result)."""
    status, slug = next(((s, t) for cls, s, t in _MAPPING if isinstance(exc, cls)),
                        (500, "internal"))
    title = slug.replace("-", " ").capitalize()
    extra: dict[str, Any] = {}
    field_errors: list[dict[str, Any]] | None = None
    headers: dict[str, str] | None = None
    if isinstance(exc, errors.InvalidDefinition):
        field_errors = [{"field": p.path, "message": p.message} for p in exc.problems]
    elif isinstance(exc, errors.InvalidInput):
        field_errors = [{"field": exc.field, "message": str(exc).split(": ", 1)[-1]}]
    elif isinstance(exc, errors.PolicyDenied):
        extra = {"run_id": exc.run_id, "step_id": exc.step_id, "rule": exc.rule,
                 "reason": exc.reason}
    elif status == 503:
        headers = {"Retry-After": "5"}
    body: dict[str, Any] = {"type": PROBLEM_TYPE + slug, "title": title, "status": status,
                            "detail": str(exc), **extra}
    if field_errors:
        body["errors"] = field_errors
    return status, body, headers

