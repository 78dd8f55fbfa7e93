"""/metrics series for OpsMedic's own alert rules, the health score on /metrics, the
dashboard overview and `opsmedic status` (in-process ASGI, a real SqliteStore)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.app import create_http_app, create_server
from mcp_server.cli_views import cmd_status
from mcp_server.core.health_score import HOST_DUTY, HOST_FACT
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus, Severity
from tests.helpers import make_settings


@pytest.fixture
async def api(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    await deps.start()
    server = create_server(deps.settings, deps, docker=False)
    transport = httpx.ASGITransport(app=create_http_app(server, deps.settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, deps
    await deps.stop()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


def _one(text: str, name: str, **labels: str) -> float:
    return _samples(text, name)[tuple(sorted(labels.items()))]


async def _refused(deps: Deps, rule: str, decision: str) -> None:
    await deps.auditor.record(actor="opsmedic", transport="internal", tool="action:restart",
                              target="container:web", outcome="refused", decision=decision,
                              args={"reason": "r", "why": "w", "rule": rule})  # fmt: skip


async def test_counters_exist_from_zero_then_count(api):
    client, deps = api
    first = (await client.get("/metrics")).text
    for name in ("opsmedic_escalations_total", "opsmedic_restart_budget_exhausted_total",
                 "opsmedic_heal_failures_total"):  # fmt: skip
        assert _one(first, name) == 0  # increase() in the rules needs the 0 sample
    incidents = deps.services.incidents
    inc, _ = await incidents.report("container:web", "died", "web died", Severity.critical)
    await incidents.transition(inc.id, IncidentStatus.escalated, "budget spent")
    await _refused(deps, "budget", "escalate")
    await _refused(deps, "budget", "wait")  # backoff: not exhausted
    await _refused(deps, "scope", "refused")
    for outcome in ("failed", "error", "ok"):
        await deps.auditor.record(actor="o", transport="internal", tool="action:restart",
                                  target="container:web", outcome=outcome)  # fmt: skip
    text = (await client.get("/metrics")).text
    assert _one(text, "opsmedic_escalations_total") == 1
    assert _one(text, "opsmedic_restart_budget_exhausted_total") == 1
    assert _one(text, "opsmedic_heal_failures_total") == 2
    refusals = "opsmedic_action_refusals_total"
    assert _one(text, refusals, type="restart", rule="budget", verdict="escalate") == 1
    assert _one(text, refusals, type="restart", rule="budget", verdict="wait") == 1
    assert _one(text, refusals, type="restart", rule="scope", verdict="refused") == 1
    again = (await client.get("/metrics")).text  # read incrementally: not counted twice
    assert _one(again, "opsmedic_escalations_total") == 1


async def test_duties_up_and_last_progress(api):
    client, deps = api
    deps.duties.add("reconcile", 30)
    deps.duties.beat("reconcile")
    deps.duties.add("imap-replies", 60)
    deps.duties.set("imap-replies", "waiting", "IMAP refused")
    deps.duties.add("mail-outbox", 60)
    deps.duties.set("mail-outbox", "failed", "boom")
    text = (await client.get("/metrics")).text
    assert _one(text, "opsmedic_duty_up", duty="reconcile") == 1
    assert _one(text, "opsmedic_duty_up", duty="imap-replies") == 0
    assert _one(text, "opsmedic_duty_up", duty="mail-outbox") == 0
    beat = deps.duties.get_duty("reconcile").last_beat
    last = _one(text, "opsmedic_duty_last_progress_timestamp_seconds", duty="reconcile")
    assert last == pytest.approx(beat.timestamp())
    assert ("duty", "imap-replies") not in {
        k[0] for k in _samples(text, "opsmedic_duty_last_progress_timestamp_seconds")
    }


async def test_health_score_on_metrics_overview_and_status(api, tmp_path, capsys):
    client, deps = api
    await deps.services.incidents.report("container:web", "died", "down", Severity.critical)
    deps.duties.add(HOST_DUTY, 30)
    deps.duties.beat(HOST_DUTY, facts={HOST_FACT: {"cpu": "warn", "memory": "ok"}})
    text = (await client.get("/metrics")).text
    assert _one(text, "opsmedic_health_score", target="container:web") == 60
    assert _one(text, "opsmedic_health_score", target="host") == 90
    assert _one(text, "opsmedic_health_score", target="overall") == 55
    health = (await client.get("/api/overview")).json()["health"]
    assert health["overall"] == 55
    assert health["targets"][0] == {"target": "container:web", "score": 60,
                                    "reasons": ["critical incident 1"]}  # fmt: skip
    await deps.services.store_probe.check(max_age_s=0.0)  # this instance's heartbeat row
    assert await cmd_status(deps.settings) == 1
    out = capsys.readouterr().out
    assert "health   55/100: container:web 60 (critical incident 1); host 90 (cpu warn)" in out
