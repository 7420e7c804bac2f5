"""Checks responses against the OpenAPI document the API serves (/openapi.json).

`assert_conforms(spec, method, path_template, response)` checks one response: its status is
declared for the operation (or is one of the statuses any operation may answer), its media
type is the declared one (`application/problem+json` for every error), and its JSON body
validates against the declared schema, `#/components/schemas/...` references resolved
against the document. `ContractRecorder` does the same for every response an httpx client
receives, so a test module can check every request it makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from jsonschema import Draft202012Validator, FormatChecker

from api.app import PREFIX, ROOT_ALIASES

# Any operation may answer these, declared or not: malformed request, no or bad key,
# forbidden, no such object (or another tenant's), body too large, database unavailable.
GENERIC_STATUSES = frozenset({400, 401, 403, 404, 413, 503})
PROBLEM_MEDIA = "application/problem+json"
JSON_MEDIA = "application/json"
# Served outside the document it describes.
UNDESCRIBED = frozenset({"/openapi.json", f"{PREFIX}/openapi.json"})

_FORMATS = FormatChecker()


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339: a date, a time and an offset (jsonschema checks none without extras)."""
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


class ContractViolation(AssertionError):
    pass


def _media(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()


def template_for(spec: dict[str, Any], raw_path: str) -> str | None:
    """The document's path template matching a request's (percent-encoded) path."""
    path = PREFIX + raw_path if raw_path in ROOT_ALIASES else raw_path
    if path in spec["paths"]:
        return path
    for template in spec["paths"]:
        pattern = re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
        if re.fullmatch(re.sub(r"{\w+}", "[^/]+", pattern), path):
            return str(template)
    return None


def validate_body(spec: dict[str, Any], schema: dict[str, Any], body: Any,
                  where: str) -> None:
    """Raises ContractViolation listing every way ``body`` breaks ``schema``."""
    rooted = {**schema, "components": spec["components"]}  # so "#/components/…" resolves
    validator = Draft202012Validator(rooted, format_checker=_FORMATS)
    problems = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if problems:
        lines = [f"  at /{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}"
                 for e in problems[:10]]
        raise ContractViolation(f"{where}: body does not match its schema:\n" + "\n".join(lines))


def assert_conforms(spec: dict[str, Any], method: str, path_template: str | None,
                    response: httpx.Response) -> None:
    """Checks status, media type and body of ``response`` against the document."""
    status = response.status_code
    where = f"{method.upper()} {path_template or response.request.url.path} -> {status}"
    operation = (spec["paths"].get(path_template, {}).get(method.lower())
                 if path_template else None)
    declared: dict[str, Any] = operation["responses"] if operation else {}
    # where no operation matches (the router's 404/405) only a problem is checked
    undeclared = str(status) not in declared and status not in GENERIC_STATUSES
    if undeclared and (operation is not None or not 400 <= status < 500):
        raise ContractViolation(f"{where}: status {status} is not declared "
                                    f"(declared: {sorted(declared)}); body: {response.text[:300]}")
    if status >= 400:
        if _media(response) != PROBLEM_MEDIA:
            raise ContractViolation(f"{where}: an error must be {PROBLEM_MEDIA}, "
                                    f"got {_media(response)!r}")
        problem = response.json()
        validate_body(spec, {"$ref": "#/components/schemas/Problem"}, problem, where)
        if problem["status"] != status:
            raise ContractViolation(f"{where}: problem says status {problem['status']}")
        return
    content = declared.get(str(status), {}).get("content")
    if not content:  # declared without a body schema (metrics' text, for one)
        return
    if _media(response) not in content:
        raise ContractViolation(f"{where}: media type {_media(response)!r} is not one of "
                                f"{sorted(content)}")
    validate_body(spec, content[_media(response)]["schema"], response.json(), where)


@dataclass
class ContractRecorder:
    """An httpx response hook: checks every response, keeps the violations and the
    operations seen, so a test can fail on them at the end rather than at the first."""

    spec: dict[str, Any]
    violations: list[str] = field(default_factory=list)
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        raw_path = response.request.url.raw_path.decode("ascii").split("?")[0]
        if raw_path in UNDESCRIBED:
            return
        method = response.request.method
        template = template_for(self.spec, raw_path)
        if template is not None:
            self.seen.add((method.upper(), template, response.status_code))
        try:
            assert_conforms(self.spec, method, template, response)
        except ContractViolation as exc:
            self.violations.append(str(exc))
        except ValueError as exc:  # not JSON at all
            self.violations.append(f"{method} {raw_path}: unreadable body ({exc})")

    def install(self, client: httpx.AsyncClient) -> None:
        hooks = client.event_hooks
        hooks.setdefault("response", []).append(self)
        client.event_hooks = hooks

    def check(self) -> None:
        if self.violations:
            unique = list(dict.fromkeys(self.violations))
            self.violations.clear()  # reported once, not again at teardown
            raise ContractViolation(f"{len(unique)} response(s) break the OpenAPI document:\n"
                                    + "\n".join(unique[:25]))
