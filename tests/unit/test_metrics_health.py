"""/metrics series for OpsMedic's own alert rules, the health score on /metrics, the
dashboard overview and `opsmedic status` (in-process ASGI, a real SqliteStore)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.cli_views import cmd_status
from mcp_server.core.health_score import HOST_DUTY, HOST_FACT
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus, Severity
from tests.unit.test_web_api import _client, _metric


@pytest.fixture
async def web(tmp_path):
    async for pair in _client(tmp_path):
        yield pair


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = float(s.value)
    return out


async def _refused(deps: Deps, rule: str, decision: str) -> None:
    await deps.auditor.record(actor="opsmedic", transport="internal", tool="action:restart",
                              target="container:web", outcome="refused", decision=decision,
                              args={"reason": "r", "why": "w", "rule": rule})  # fmt: skip


async def test_counters_exist_from_zero_then_count(web):
    client, deps = web
    first = (await client.get("/metrics")).text
    for name in ("opsmedic_escalations_total", "opsmedic_restart_budget_exhausted_total",
                 "opsmedic_heal_failures_total"):  # fmt: skip
        assert _metric(first, name) == 0  # increase() in the rules needs the 0 sample
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
    assert _metric(text, "opsmedic_escalations_total") == 1
    assert _metric(text, "opsmedic_restart_budget_exhausted_total") == 1
    assert _metric(text, "opsmedic_heal_failures_total") == 2
    refusals = "opsmedic_action_refusals_total"
    assert _metric(text, refusals, type="restart", rule="budget", verdict="escalate") == 1
    assert _metric(text, refusals, type="restart", rule="budget", verdict="wait") == 1
    assert _metric(text, refusals, type="restart", rule="scope", verdict="refused") == 1
    again = (await client.get("/metrics")).text  # read incrementally: not counted twice
    assert _metric(again, "opsmedic_escalations_total") == 1


async def test_duties_up_and_last_progress(web):
    client, deps = web
    deps.duties.add("reconcile", 30)
    deps.duties.beat("reconcile")
    deps.duties.add("imap-replies", 60)
    deps.duties.set("imap-replies", "waiting", "IMAP refused")
    deps.duties.add("mail-outbox", 60)
    deps.duties.set("mail-outbox", "failed", "boom")
    text = (await client.get("/metrics")).text
    assert _metric(text, "opsmedic_duty_up", duty="reconcile") == 1
    assert _metric(text, "opsmedic_duty_up", duty="imap-replies") == 0
    assert _metric(text, "opsmedic_duty_up", duty="mail-outbox") == 0
    beat = deps.duties.get_duty("reconcile").last_beat
    last = _metric(text, "opsmedic_duty_last_progress_timestamp_seconds", duty="reconcile")
    assert last == pytest.approx(beat.timestamp())
    assert ("duty", "imap-replies") not in {
        k[0] for k in _samples(text, "opsmedic_duty_last_progress_timestamp_seconds")
    }


async def test_health_score_on_metrics_overview_and_status(web, tmp_path, capsys):
    client, deps = web
    await deps.services.incidents.report("container:web", "died", "down", Severity.critical)
    deps.duties.add(HOST_DUTY, 30)
    deps.duties.beat(HOST_DUTY, facts={HOST_FACT: {"cpu": "warn", "memory": "ok"}})
    text = (await client.get("/metrics")).text
    assert _metric(text, "opsmedic_health_score", target="container:web") == 60
    assert _metric(text, "opsmedic_health_score", target="host") == 90
    assert _metric(text, "opsmedic_health_score", target="overall") == 55
    health = (await client.get("/api/overview")).json()["health"]
    assert health["overall"] == 55
    assert health["targets"][0] == {"target": "container:web", "score": 60,
                                    "reasons": ["critical incident 1"]}  # fmt: skip
    await deps.services.store_probe.check(max_age_s=0.0)  # this instance's heartbeat row
    assert await cmd_status(deps.settings) == 1
    out = capsys.readouterr().out
    assert "health   55/100: container:web 60 (critical incident 1); host 90 (cpu warn)" in out
