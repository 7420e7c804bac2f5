"""Security of the REST API: tenant isolation (BOLA), the role matrix, authentication,
hostile input, and tenant-scoped idempotency.

Routes come from `api.registry.ENDPOINTS`, so a route added later is covered by every
test here without editing it; a route whose path parameter or body these tests cannot
fill fails loudly, asking for a value. Every response is also checked against the OpenAPI
document (`tests/api/contract.py`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
import pytest
import yaml
from psycopg import sql

from api.app import PREFIX
from api.registry import ENDPOINTS, Endpoint
from engine.governance import apikeys
from engine.governance.apikeys import Role
from tests.api.conftest import KEYS, SECRET, Harness
from tests.api.contract import ContractRecorder
from tests.api.worlds import (
    YAML,
    World,
    acme_and_default,
    bounded,
    bundle,
    call,
    definition,
    leaks,
)

pytestmark = pytest.mark.anyio

PARAM = re.compile(r"{(\w+)}")
ID_ROUTES = [ep for ep in ENDPOINTS if PARAM.search(ep.path)]
LIST_ROUTES = [ep for ep in ENDPOINTS if ep.method == "GET" and ep.roles
               and not PARAM.search(ep.path)]
GUARDED = [ep for ep in ENDPOINTS if ep.roles]
OPEN = [ep for ep in ENDPOINTS if not ep.roles]
QUERY_ROUTES = [ep for ep in ENDPOINTS if ep.method == "GET" and ep.query]
ROLE_KEYS = ("alice", "bob", "olga", "wendy")  # one non-admin role each, tenant default


def label(ep: Endpoint) -> str:
    return f"{ep.method} {ep.path}"


def fill(ep: Endpoint, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise AssertionError(f"{label(ep)}: no test value for path parameter {name!r}; "
                                 "add one to tests/api/worlds.py World.path_values")
        return values[name]

    return PREFIX + PARAM.sub(one, ep.path)


def key_with_role(ep: Endpoint) -> str:
    """A default-tenant key that holds one of the route's roles without being admin."""
    return next((k for k in ROLE_KEYS if set(KEYS[k][0]) & set(ep.roles)), "root")


def tenant_of(key: str) -> str:
    return KEYS[key][1][0]


def allowed(key: str, ep: Endpoint) -> bool:
    roles = set(KEYS[key][0])
    return Role.ADMIN in roles or bool(roles & set(ep.roles))


# Well-formed bodies by request schema, sent where the route needs one. A new schema
# without an entry here fails the tests that would send it.
def valid_bodies(schema: str | None, *, tag: str) -> list[dict[str, Any]]:
    bodies: dict[str | None, list[dict[str, Any]]] = {
        None: [{}],
        "StartRun": [{"json": {"input": {"incident_id": "x"}}}],
        "StartRuns": [{"json": {"items": [{"input": {"incident_id": "x"}}]}}],
        "Rerun": [{"json": {"from_step": "detect", "dry_run": True}},
                  {"json": {"from_step": "detect"}}],
        "Cancel": [{"json": {"reason": "test"}}],
        "ApprovalDecision": [{"json": {"reason": "test"}}],
        "ApprovalRejection": [{"json": {"reason": "test"}}],
        "Facts": [{"json": {"topic": "job.incident.detect"}}],
        "WorkflowDefinition": [{"content": definition(f"wf-{tag}"), "headers": YAML}],
        "PolicyBundle": [{"content": bundle(f"m-{tag}"), "headers": YAML}],
        "Event": [{"json": {"id": f"e-{tag}", "name": "ticket.approved", "key": "k",
                            "data": {"by": "test"}}}],
    }
    if schema not in bodies:
        raise AssertionError(f"no test body for request schema {schema!r}; add one here")
    return bodies[schema]


async def send(api: Harness, ep: Endpoint, url: str, headers: dict[str, Any],
               body: dict[str, Any], params: Any = None) -> httpx.Response:
    return await call(api, ep.method, url, params=params,
                      headers={**headers, **body.get("headers", {})},
                      **{k: v for k, v in body.items() if k != "headers"})


def is_forbidden(response: httpx.Response) -> bool:
    return (response.status_code == 403
            and str(response.json().get("type", "")).endswith("/forbidden"))


@pytest.fixture(autouse=True)
async def contract(api: Harness) -> AsyncIterator[ContractRecorder]:
    """Every response of every test here must match the served OpenAPI document."""
    recorder = ContractRecorder((await api.client.get("/openapi.json")).json())
    recorder.install(api.client)
    yield recorder
    recorder.check()


# --- 1. BOLA: another tenant's ids answer 404 on every route that takes one -------------


@bounded(45)
async def test_every_route_with_an_id_answers_404_for_another_tenants_object(
        api: Harness) -> None:
    acme, default = await acme_and_default(api)
    assert ID_ROUTES, "no route takes an id?"
    wrong: list[str] = []
    for ep in ID_ROUTES:
        url = fill(ep, acme.path_values())
        # the right role as a default-tenant key, and root (granted acme too) acting as default
        for key in dict.fromkeys((key_with_role(ep), "root")):
            for body in valid_bodies(ep.request, tag="bola"):
                response = await send(api, ep, url, api.as_(key, "default"), body)
                if response.status_code != 404:
                    wrong.append(f"{label(ep)} as {key}@default -> {response.status_code} "
                                 f"{response.text[:200]}")
    assert not wrong, "acme's objects reached from tenant default:\n" + "\n".join(wrong)
    # the ids were real: acme itself reads every one of them
    for ep in ID_ROUTES:
        if ep.method == "GET":
            seen = await api.client.get(fill(ep, acme.path_values()),
                                        headers=api.as_("root", "acme"))
            assert seen.status_code == 200, (label(ep), seen.text)
    await assert_acme_untouched(api, acme, default)


async def assert_acme_untouched(api: Harness, acme: World, default: World) -> None:
    run = (await api.client.get(f"{PREFIX}/workflow-runs/{acme.run_id}",
                                headers=api.as_("mallory", "acme"))).json()
    assert run["status"] == "waiting"
    assert [a["status"] for a in run["approvals"]] == ["pending"]
    runs = (await api.client.get(f"{PREFIX}/workflow-runs", headers=api.as_("root", "acme")))
    assert [r["run_id"] for r in runs.json()["items"]] == [acme.run_id]  # no rerun either
    policy = await api.client.get(f"{PREFIX}/policy/snapshots", headers=api.as_("root", "acme"))
    assert policy.json()["active"] is None  # the activation from default did not land
    mine = await api.client.get(f"{PREFIX}/workflow-runs", headers=api.as_("root", "default"))
    assert [r["run_id"] for r in mine.json()["items"]] == [default.run_id]


@bounded(30)
async def test_lists_as_default_never_show_acmes_objects(api: Harness) -> None:
    acme, default = await acme_and_default(api)
    filters: dict[str, dict[str, str]] = {
        "workflow_id": {"workflow_id": acme.workflow_id}, "topic": {"topic": "job.incident.detect"},
        "status": {}, "limit": {"limit": "500"}, "cursor": {}}
    for ep in LIST_ROUTES:
        for key in dict.fromkeys((key_with_role(ep), "root")):
            for name in ("", *ep.query):
                response = await api.client.get(fill(ep, {}), params=filters.get(name, {}),
                                                headers=api.as_(key, "default"))
                assert response.status_code == 200, (label(ep), key, response.text)
                assert not leaks(response.text, acme), (label(ep), key, name)
        # and default's own objects are there, so the lists were not merely empty (but the
        # fleet views, which name no object: counts per topic, and workers serving every
        # tenant; test_fleet checks that a queue counts only the caller's tenant's jobs;
        # and /whoami, which describes the key)
        if ep.path in ("/workers", "/queues", "/whoami"):
            continue
        mine = await api.client.get(fill(ep, {}), headers=api.as_("root", "default"))
        assert leaks(mine.text, default), label(ep)
    by_filter = await api.client.get(f"{PREFIX}/workflow-runs",
                                     params={"workflow_id": acme.workflow_id},
                                     headers=api.as_("root", "default"))
    assert by_filter.json()["items"] == []


# --- 2. The role matrix and authentication ----------------------------------------------


def absent_values() -> dict[str, str]:
    """Well-formed ids that name nothing: an allowed caller gets past auth to a 404."""
    return {"workflow_id": "no-such-workflow", "run_id": str(uuid4()),
            "job_id": "no-such-job", "approval_id": str(uuid4()), "snapshot_hash": "0" * 64,
            "name": "no-such-schedule"}


@bounded(20)
@pytest.mark.parametrize("ep", GUARDED, ids=label)
async def test_role_matrix(api: Harness, ep: Endpoint) -> None:
    url = fill(ep, absent_values())
    wrong: list[str] = []
    for key in KEYS:
        for body in valid_bodies(ep.request, tag=key):
            response = await send(api, ep, url, api.as_(key, tenant_of(key)), body)
            if response.status_code >= 500:
                wrong.append(f"{key}: {response.status_code} {response.text[:200]}")
            elif allowed(key, ep) and response.status_code in (401, 403):
                wrong.append(f"{key} holds {[r.value for r in KEYS[key][0]]} but got "
                             f"{response.status_code} {response.text[:200]}")
            elif not allowed(key, ep) and not is_forbidden(response):
                wrong.append(f"{key} lacks {[r.value for r in ep.roles]} but got "
                             f"{response.status_code} {response.text[:200]}")
    assert not wrong, f"{label(ep)}:\n" + "\n".join(wrong)


@bounded(10)
@pytest.mark.parametrize("ep", OPEN, ids=label)
async def test_open_routes_need_no_key(api: Harness, ep: Endpoint) -> None:
    response = await api.client.request(ep.method, fill(ep, {}))
    assert response.status_code == 200, response.text


@bounded(30)
async def test_every_guarded_route_refuses_bad_keys_and_tenants(api: Harness) -> None:
    revoked_row, revoked = await apikeys.create(api.svc.db, SECRET, name="gone",
                                                roles=[Role.ADMIN], tenants=["default"],
                                                created_by="test")
    await apikeys.revoke(api.svc.db, revoked_row.key_id)
    root = api.keys["root"]
    forged = root[:-4] + ("AAAA" if not root.endswith("AAAA") else "BBBB")
    unauthenticated: dict[str, dict[str, str | bytes]] = {
        "no key": {},
        "empty key": {"X-API-Key": ""},
        "revoked key": {"X-API-Key": revoked},
        "malformed key": {"X-API-Key": "hello"},
        "forged secret": {"X-API-Key": forged},
        "unknown key id": {"X-API-Key": "wdn_0123456789abcdef_" + "x" * 43},
        "NUL in key id": {"X-API-Key": b"wdn_0123456789abcde\x00_" + b"x" * 43},
        "SQL in key id": {"X-API-Key": "wdn_' OR '1'='1'--_" + "x" * 43},
        "latin-1 key": {"X-API-Key": b"wdn_" + b"\xff" * 16 + b"_x"},
    }
    forbidden: dict[str, dict[str, str]] = {
        "unknown tenant": api.as_("root", "globex"),
        "tenant not granted": api.as_("olga", "acme"),
        "tenant case differs": api.as_("root", "ACME"),
        "empty tenant": api.as_("root", ""),
        "path in tenant": api.as_("root", "../acme"),
        "spaces in tenant": api.as_("root", "acme default"),
        "comma list of tenants": api.as_("root", "default,acme"),
        "wildcard tenant": api.as_("root", "*"),
        "sql in tenant": api.as_("root", "x' OR '1'='1"),
        "too long tenant": api.as_("root", "a" * 65),
    }
    wrong: list[str] = []
    for ep in GUARDED:
        url = fill(ep, absent_values())
        # a body that is not even JSON: nothing is read before the caller is known
        garbage = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
        for why, headers in unauthenticated.items():
            response = await send(api, ep, url, headers, garbage)
            if response.status_code != 401 or "WWW-Authenticate" not in response.headers:
                wrong.append(f"{label(ep)} {why}: {response.status_code} {response.text[:120]}")
        for why, headers in forbidden.items():
            response = await send(api, ep, url, headers, garbage)
            if not is_forbidden(response):
                wrong.append(f"{label(ep)} {why}: {response.status_code} {response.text[:120]}")
    assert not wrong, "\n".join(wrong)


# --- 3. Injection and hostile input -------------------------------------------------------

HOSTILE = [
    "' OR 1=1 --", '"; DROP TABLE warden.runs; --', "1; SELECT pg_sleep(10)--",
    "\x00", "a\x00b", "x" * 10_000, "\u202eexe.txt\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd",
    "\U0001f984\U0001f4a5\U0001d54f", "../../etc/passwd", "%", "\\", "null", "[]", "{}", "-1",
    " ", "\r\nX-Evil: 1",
    "${jndi:ldap://x}", "{{7*7}}", "\ufeff", "\uffff",
]
# percent-escapes that decode to invalid UTF-8 (overlong, surrogate, lone continuation)
RAW_HOSTILE = ["%FF%FE", "%ED%A0%80", "%C0%AF", "%80", "%00"]


def cursor_of(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")


EXTRA = {
    "limit": ["-5", str(10**12), "9" * 50, "0", "1.5", "NaN", "0x10", "\uff11\uff12", " 5 "],
    "after": ["-1", "abc", "99999999999999999999", "-99999999999999999999", "1e3", "0"],
    "cursor": ["garbage", "====", cursor_of([]), cursor_of({"a": 1, "b": 2}),
               cursor_of(["2020-01-01T00:00:00+00:00", "\u0000"]),
               cursor_of(["2020-01-01T00:00:00+00:00", "' OR 1=1 --"]),
               cursor_of(["9999-12-31T23:59:59+00:00", str(uuid4())]),
               cursor_of(["0001-01-01T00:00:00+14:00", str(uuid4())]),
               cursor_of(["2020-01-01", str(uuid4())]),
               cursor_of(["not a time", "x"]), cursor_of([1, 2])],
    "status": ["PENDING", "pending ", "pending,running"],
}


async def fingerprint(api: Harness) -> dict[str, Any]:
    """Every warden table (but the keys, whose last_used moves) with its rows' digest."""
    async with api.svc.db.connection() as conn:
        cur = await conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'warden' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
            " ORDER BY 1")
        tables = [str(r[0]) for r in await cur.fetchall()]
        digest: dict[str, Any] = {}
        for table in tables:
            if table == "api_keys":
                continue
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                            " t::text), '')) FROM warden.{} t").format(sql.Identifier(table))
            digest[table] = await (await conn.execute(query)).fetchone()
    return digest


@bounded(45)
async def test_hostile_query_parameters_never_fail_the_server_nor_leak(api: Harness) -> None:
    acme, default = await acme_and_default(api)
    before = await fingerprint(api)
    assert {"runs", "jobs", "approvals", "workflows", "timeline"} <= set(before)
    wrong: list[str] = []
    for ep in QUERY_ROUTES:
        url = fill(ep, default.path_values())
        headers = api.as_(key_with_role(ep), "default")
        for name in ep.query:
            attempts: list[tuple[str, httpx.Response]] = []
            for value in [*HOSTILE, *EXTRA.get(name, [])]:
                response = await call(api, "GET", url, params={name: value}, headers=headers)
                attempts.append((repr(value[:30]), response))
            for raw in RAW_HOSTILE:
                response = await call(api, "GET", f"{url}?{name}={raw}", headers=headers)
                attempts.append((raw, response))
            for value, response in attempts:
                where = f"{label(ep)} ?{name}={value}"
                if response.status_code not in (200, 400):
                    wrong.append(f"{where} -> {response.status_code} {response.text[:160]}")
                elif response.status_code == 200 and leaks(response.text, acme):
                    wrong.append(f"{where} -> 200 with acme's data")
                elif response.status_code == 400 and response.json().get("errors", [{}])[0].get(
                        "field") not in (name, None):
                    wrong.append(f"{where} -> 400 naming another field: {response.text[:160]}")
    assert not wrong, f"{len(wrong)} hostile queries misbehaved:\n" + "\n".join(wrong[:40])
    assert await fingerprint(api) == before  # every table still there, nothing changed


@bounded(20)
async def test_query_parameter_edges_have_the_documented_meaning(api: Harness) -> None:
    _acme, default = await acme_and_default(api)
    headers = api.as_("olga")
    one = await api.client.get(f"{PREFIX}/jobs", params={"limit": "-5"}, headers=headers)
    assert one.status_code == 200 and len(one.json()["items"]) == 1  # clamped to 1
    assert one.json()["next_cursor"]
    every = await api.client.get(f"{PREFIX}/jobs", params={"limit": str(10**12)}, headers=headers)
    assert every.status_code == 200 and len(every.json()["items"]) == len(default.job_ids)
    for name, value in (("cursor", "garbage"), ("limit", "abc"), ("status", "nope")):
        bad = await api.client.get(f"{PREFIX}/jobs", params={name: value}, headers=headers)
        assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == name, bad.text
    timeline = f"{PREFIX}/workflow-runs/{default.run_id}/timeline"
    from_start = await api.client.get(timeline, params={"after": "-1"}, headers=headers)
    assert from_start.status_code == 200 and from_start.json()["items"][0]["seq"] >= 1
    not_a_seq = await api.client.get(timeline, params={"after": "abc"}, headers=headers)
    assert not_a_seq.status_code == 400 and not_a_seq.json()["errors"][0]["field"] == "after"
    twice = await api.client.get(f"{PREFIX}/jobs?limit=1&limit=2", headers=headers)
    assert twice.status_code == 400


@bounded(45)
async def test_hostile_path_parameters_answer_404(api: Harness) -> None:
    await acme_and_default(api)
    before = await fingerprint(api)
    wrong: list[str] = []
    for ep in ID_ROUTES:
        names = PARAM.findall(ep.path)
        for value in dict.fromkeys([quote(v, safe="") for v in HOSTILE] + RAW_HOSTILE):
            url = fill(ep, dict.fromkeys(names, value))
            for body in valid_bodies(ep.request, tag="hostile"):
                response = await send(api, ep, url, api.as_("root"), body)
                if response.status_code != 404:
                    wrong.append(f"{label(ep)} with {value[:40]!r} -> {response.status_code} "
                                 f"{response.text[:160]}")
    assert not wrong, f"{len(wrong)} hostile path parameters misbehaved:\n" + "\n".join(wrong[:40])
    assert await fingerprint(api) == before


# Wrong JSON values for each type a schema declares; null is not among them (the routes
# take an explicit null for an optional field as absent).
WRONG_FOR: dict[str, list[Any]] = {
    "string": [123, 1.5, True, [], {}, ["x"]],
    "object": ["text", 1, True, [], [{"a": 1}]],
    "boolean": ["true", 1, 0, [], {}],
    "array": ["x", 1, {}, True],
    "integer": ["1", 1.5, [], {}],
}


def wrong_values(prop: dict[str, Any]) -> list[Any]:
    kind = prop.get("type")
    if not isinstance(kind, str):  # ANY (no type) takes every value
        return []
    values = list(WRONG_FOR[kind])
    item_kind = prop.get("items", {}).get("type")
    if kind == "array" and item_kind == "string":
        values += [[1], ["ok", None], [["nested"]]]
    if kind == "object" and prop.get("additionalProperties", {}) == {"type": "string"}:
        values += [{"k": 1}, {"k": None}, {"k": ["v"]}]
    return values


def json_routes(spec: dict[str, Any]) -> list[tuple[Endpoint, dict[str, Any]]]:
    found = []
    for ep in ENDPOINTS:
        if ep.request and "application/json" in ep.request_media:
            schema = spec["components"]["schemas"][ep.request]
            if schema.get("properties"):
                found.append((ep, schema))
    return found


def body_with(schema_name: str, field: str, value: Any) -> dict[str, Any]:
    """A valid body for the schema, with ``field`` set to ``value``."""
    valid = valid_bodies(schema_name, tag="types")[0]
    base = dict(valid["json"] if "json" in valid else yaml.safe_load(valid["content"]))
    base[field] = value
    return base


def names_field(response: httpx.Response, field: str) -> bool:
    errors = response.json().get("errors") or []
    return any(e.get("field") == field or str(e.get("field", "")).startswith(f"{field}.")
               or str(e.get("field", "")).startswith(f"{field}[") for e in errors)


@bounded(45)
async def test_wrong_json_types_and_unknown_fields_are_refused_naming_the_field(
        api: Harness, contract: ContractRecorder) -> None:
    _acme, default = await acme_and_default(api)
    routes = json_routes(contract.spec)
    assert {ep.request for ep, _ in routes} >= {"StartRun", "Rerun", "Cancel",
                                                 "ApprovalDecision", "Facts"}
    before = await fingerprint(api)
    wrong: list[str] = []
    for ep, schema in routes:
        assert ep.request is not None
        url = fill(ep, default.path_values())
        key = key_with_role(ep)
        probes = [(name, value) for name, prop in schema["properties"].items()
                  for value in wrong_values(prop)]
        if schema.get("additionalProperties") is False:
            probes += [("unexpected_field", 1), ("__proto__", {}), ("FROM_STEP", "x")]
        for name, value in probes:
            body = body_with(ep.request, name, value)
            response = await call(api, ep.method, url, json=body, headers=api.as_(key))
            where = f"{label(ep)} {name}={json.dumps(value)[:40]}"
            if response.status_code not in (400, 422):
                wrong.append(f"{where} -> {response.status_code} {response.text[:160]}")
            elif not names_field(response, name):
                wrong.append(f"{where} -> {response.status_code} without naming {name!r}: "
                             f"{response.text[:160]}")
        not_objects: list[Any] = [[], "text", 1, None]
        for not_an_object in not_objects:
            response = await call(
                api, ep.method, url, content=json.dumps(not_an_object).encode(),
                headers={**api.as_(key), "Content-Type": "application/json"})
            if response.status_code not in (400, 422):
                wrong.append(f"{label(ep)} body {not_an_object!r} -> {response.status_code}")
    assert not wrong, f"{len(wrong)} bodies were not refused as they should be:\n" + "\n".join(
        wrong[:40])
    assert await fingerprint(api) == before  # nothing was started, decided or cancelled


@bounded(30)
async def test_nul_characters_in_bodies_are_refused_not_a_server_error(
        api: Harness, contract: ContractRecorder) -> None:
    """PostgreSQL stores no U+0000 in text or jsonb: the API must refuse it as bad input."""
    _acme, default = await acme_and_default(api)
    wrong: list[str] = []
    for ep, schema in json_routes(contract.spec):
        assert ep.request is not None
        url = fill(ep, default.path_values())
        for name, prop in schema["properties"].items():
            kind = prop.get("type")
            if isinstance(kind, list):  # nullable: ["string", "null"]
                kind = next((k for k in kind if k != "null"), None)
            value: Any = {"string": "a\x00b", "array": ["a\x00b"]}.get(
                kind, {"k": "a\x00b"} if kind in ("object", None) else None)
            if value is None:
                continue
            body = body_with(ep.request, name, value)
            response = await call(api, ep.method, url, json=body,
                                  headers=api.as_(key_with_role(ep)))
            if response.status_code >= 500:
                wrong.append(f"{label(ep)} {name}={json.dumps(value)} -> "
                             f"{response.status_code} {response.text[:160]}")
    as_json = json.dumps({"id": "nul", "name": "a\x00b", "version": "1.0.0",
                          "steps": {"s": {"type": "job", "topic": "t"}}})
    for url, content in ((f"{PREFIX}/workflows", as_json),
                         (f"{PREFIX}/policy/bundles", json.dumps(
                             {"default_decision": "allow", "rules": [
                                 {"name": "a\x00b", "decision": "deny", "reason": "r",
                                  "match": {"topics": ["t"]}}]}))):
        response = await call(api, "POST", url, content=content,
                              headers={**api.as_("root"), "Content-Type": "application/json"})
        if response.status_code >= 500:
            wrong.append(f"POST {url} with U+0000 -> {response.status_code} "
                         f"{response.text[:160]}")
    assert not wrong, f"{len(wrong)} bodies with U+0000 failed the server:\n" + "\n".join(wrong)


@bounded(20)
async def test_hostile_idempotency_keys_are_stored_verbatim_or_refused(api: Harness) -> None:
    stored = await api.client.post(f"{PREFIX}/workflows", content=definition("keyed"),
                                   headers={**api.as_("alice"), **YAML})
    assert stored.status_code == 201
    url = f"{PREFIX}/workflows/keyed/runs"
    too_long = await call(api, "POST", url, json={},
                          headers={**api.as_("alice"), "Idempotency-Key": "k" * 256})
    assert too_long.status_code == 422, too_long.text
    assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"
    accepted: dict[bytes, str] = {}
    for key in (b"k" * 255, b"' OR 1=1 --", b'"; DROP TABLE warden.runs; --', b"\xff\xfe\x80",
                "\U0001f984".encode(), b"a\tb", b"%00", b"../../x"):
        headers: dict[str, str | bytes] = {**api.as_("alice"), "Idempotency-Key": key}
        first = await call(api, "POST", url, json={"input": {"k": 1}}, headers=headers)
        assert first.status_code == 201, (key, first.status_code, first.text[:200])
        replay = await call(api, "POST", url, json={"input": {"k": 1}}, headers=headers)
        assert replay.status_code == 200, (key, replay.text[:200])
        assert replay.json()["run_id"] == first.json()["run_id"]
        accepted[key] = str(first.json()["run_id"])
    assert len(set(accepted.values())) == len(accepted)  # no two keys collapsed into one
    # PostgreSQL text holds no U+0000: such a key is bad input, not a server failure
    nul = await call(api, "POST", url, json={},
                     headers={**api.as_("alice"), "Idempotency-Key": b"a\x00b"})
    assert nul.status_code == 422, (nul.status_code, nul.text[:200])


# --- 6. Idempotency keys are scoped by tenant ---------------------------------------------


@bounded(20)
async def test_the_same_idempotency_key_in_two_tenants_makes_two_runs(api: Harness) -> None:
    for key, tenant in (("mallory", "acme"), ("alice", "default")):
        stored = await api.client.post(f"{PREFIX}/workflows", content=definition("shared-flow"),
                                       headers={**api.as_(key, tenant), **YAML})
        assert stored.status_code == 201, stored.text
    url = f"{PREFIX}/workflows/shared-flow/runs"
    acme = {**api.as_("mallory", "acme"), "Idempotency-Key": "same-key"}
    default = {**api.as_("alice", "default"), "Idempotency-Key": "same-key"}
    first = await api.client.post(url, json={"input": {"who": "acme"}}, headers=acme)
    # a different body under the same key in another tenant is no conflict: a 409 here
    # would tell default that acme used the key
    second = await api.client.post(url, json={"input": {"who": "default"}}, headers=default)
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert "Idempotent-Replayed" not in second.headers
    acme_run, default_run = first.json()["run_id"], second.json()["run_id"]
    assert acme_run != default_run
    assert (first.json()["tenant_id"], second.json()["tenant_id"]) == ("acme", "default")
    # replays stay in their own tenant, with their own input
    for headers, run_id, who in ((acme, acme_run, "acme"), (default, default_run, "default")):
        replay = await api.client.post(url, json={"input": {"who": who}}, headers=headers)
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["run_id"] == run_id and replay.json()["input"] == {"who": who}
        conflict = await api.client.post(url, json={"input": {"who": "else"}}, headers=headers)
        assert conflict.status_code == 409
        assert acme_run not in conflict.text or who == "acme"
        assert default_run not in conflict.text or who == "default"
    # the same key with the same body as the other tenant's first request: still separate
    echo = await api.client.post(url, json={"input": {"who": "acme"}}, headers=default)
    assert echo.status_code == 409 and acme_run not in echo.text
    # neither tenant can read the other's run
    assert (await api.client.get(f"{PREFIX}/workflow-runs/{acme_run}",
                                 headers=api.as_("root", "default"))).status_code == 404
    assert (await api.client.get(f"{PREFIX}/workflow-runs/{default_run}",
                                 headers=api.as_("root", "acme"))).status_code == 404
    for tenant, mine in (("acme", acme_run), ("default", default_run)):
        listed = await api.client.get(f"{PREFIX}/workflow-runs", headers=api.as_("root", tenant))
        assert [r["run_id"] for r in listed.json()["items"]] == [mine]
