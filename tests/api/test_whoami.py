"""GET /whoami: the operator page learns who its key is (to grey out what it may not do)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Harness

pytestmark = pytest.mark.anyio


async def test_whoami_names_the_keys_principal_roles_and_tenants(api: Harness) -> None:
    me = await api.client.get("/api/v1/whoami", headers=api.as_("mallory", "acme"))
    assert me.status_code == 200, me.text
    doc = me.json()
    assert doc["key_id"] and api.keys["mallory"].startswith(f"wdn_{doc['key_id']}_")
    assert {k: v for k, v in doc.items() if k != "key_id"} == {
        "principal": "mallory", "roles": ["approver", "operator", "submitter"],
        "tenants": ["acme"], "tenant": "acme"}
    worker = await api.client.get("/api/v1/whoami", headers=api.as_("wendy"))
    assert worker.json()["roles"] == ["worker"]  # any role may ask


async def test_whoami_refuses_no_key_and_a_tenant_the_key_lacks(api: Harness) -> None:
    assert (await api.client.get("/api/v1/whoami")).status_code == 401
    other = await api.client.get("/api/v1/whoami", headers=api.as_("mallory"))
    assert other.status_code == 403
    assert "not granted tenant 'default'" in other.json()["detail"]
    unknown = await api.client.get("/api/v1/whoami?x=1", headers=api.as_("alice"))
    assert unknown.status_code == 400 and "unknown query parameter 'x'" in unknown.text
