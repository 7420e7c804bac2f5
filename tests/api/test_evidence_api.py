"""GET /workflow-runs/{id}/evidence: auditors and admins read a run's sealed evidence,
which verifies offline as it came."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.runs import anchors, evidence
from tests import support
from tests.api.conftest import SECRET, Harness

pytestmark = pytest.mark.anyio

PREFIX = "/api/v1"


async def test_an_auditor_reads_evidence_that_verifies_offline(api: Harness) -> None:
    await support.store(api.svc.db, support.SEED_WORKFLOW)
    run = await support.start(api.svc, "incident-remediation", {"incident_id": "I-9"})
    await support.settle(api.scheduler)
    url = f"{PREFIX}/workflow-runs/{run.run_id}/evidence"
    for reader in ("audrey", "root"):
        response = await api.client.get(url, headers=api.as_(reader))
        assert response.status_code == 200, response.text
        checked = evidence.verify_export(response.text, anchors.anchor_key(SECRET))
        assert checked.problems == [] and checked.runs == 1 and checked.events > 0
    for other in ("alice", "bob", "olga", "wendy"):
        refused = await api.client.get(url, headers=api.as_(other))
        assert refused.status_code == 403, (other, refused.text)
    body = (await api.client.get(url, headers=api.as_("audrey"))).text
    tampered = body.replace('"I-9"', '"I-8"')
    assert tampered != body
    assert evidence.verify_export(tampered, anchors.anchor_key(SECRET)).problems


async def test_the_evidence_carries_the_runs_anchored_heads(api: Harness, tmp_path: Path) -> None:
    await support.store(api.svc.db, support.SEED_WORKFLOW)
    run = await support.start(api.svc, "incident-remediation", {"incident_id": "I-9"})
    await support.settle(api.scheduler)
    key = anchors.anchor_key(SECRET)
    assert (await anchors.anchor(api.svc.db, tmp_path, key)).runs == 1
    url = f"{PREFIX}/workflow-runs/{run.run_id}/evidence"
    api.app.state.anchor_dir = tmp_path  # WARDEN_AUDIT_ANCHOR_DIR of the server
    response = await api.client.get(url, headers=api.as_("audrey"))
    checked = evidence.verify_export(response.text, key)
    assert (checked.problems, checked.anchored) == ([], 1)
    heads = [line["head"] for line in response.json()["lines"] if line["type"] == "anchor"]
    assert [(h["run_id"], h["n"]) for h in heads] == [(str(run.run_id), 1)]
