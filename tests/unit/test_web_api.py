"""The dashboard's JSON API, page, auth rules and /metrics bookkeeping, over ASGI.

A real SqliteStore in tmp_path; the HTTP app is called in-process through httpx's ASGI
transport (no socket). The live stream is read straight from its generator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.app import create_http_app, create_server
from mcp_server.deps import Deps
from mcp_server.models import Approval, Event, IncidentStatus, Job, Rca, Run, TimelineEntry
from mcp_server.safety.approvals import DecisionOutcome
from mcp_server.services import Overrides, build_services
from mcp_server.web.routes import Web
from mcp_server.web.views import HostHistory, stream_rows
from tests.helpers import make_settings, swap

TOKEN = "operator-token-for-tests-42"


async def _client(tmp_path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    deps = Deps.build(make_settings(tmp_path, **settings))
    await deps.start()
    server = create_server(deps.settings, deps, docker=False)
    app = create_http_app(server, deps.settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, deps
    await deps.stop()


@pytest.fixture
async def api(tmp_path):
    async for pair in _client(tmp_path):
        yield pair


@pytest.fixture
async def authed(tmp_path):
    async for pair in _client(tmp_path, auth={"tokens": TOKEN}):
        yield pair


def _web(deps: Deps) -> Web:
    return deps.web


# --- page and assets ---------------------------------------------------------------------


async def test_page_and_assets_are_served_from_the_package(api):
    client, _ = api
    page = await client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (await client.get("/incidents/7")).text == page.text  # the same page, routed in JS
    js = await client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert (await client.get("/static/vendor/uPlot.iife.min.js")).status_code == 200
    assert (await client.get("/static/../routes.py")).status_code == 404
    assert (await client.get("/static/nope.js")).status_code == 404


# --- reading -----------------------------------------------------------------------------


async def test_overview_counts_incidents_and_lists_targets(api):
    client, deps = api
    await deps.store.open_incident("container:web", "died", "web exited with code 3")
    inc, _ = await deps.store.open_incident("process:worker", "exited", "worker exited")
    await deps.store.update_incident(inc.id, status=IncidentStatus.healing)
    body = (await client.get("/api/overview")).json()
    assert body["incidents"]["active"] == 2
    assert body["incidents"]["by_status"]["open"] == 1
    assert body["incidents"]["by_status"]["healing"] == 1
    host = next(t for t in body["targets"] if t["kind"] == "host")
    assert host["health"] in ("ok", "warn", "crit") and body["host"]["memory"]["percent"] > 0
    assert body["sources"]["docker"] == "off" and body["audit"]["ok"] is True
    assert body["dashboard"] == {"auth": False, "approvals": True}  # the email approval flow


async def test_incident_list_filters_and_carries_rca(api):
    client, deps = api
    a, _ = await deps.store.open_incident("container:a", "died", "a died")
    b, _ = await deps.store.open_incident("container:b", "died", "b died")
    await deps.store.update_incident(b.id, status=IncidentStatus.resolved)
    await deps.store.put_rca(Rca(incident_id=a.id, summary="db down", category="dependency"))
    active = (await client.get("/api/incidents?status=active&rca=1")).json()["incidents"]
    assert [i["id"] for i in active] == [a.id]
    assert active[0]["rca"]["summary"] == "db down" and active[0]["last_event"]["kind"]
    resolved = (await client.get("/api/incidents?status=resolved")).json()["incidents"]
    assert [i["id"] for i in resolved] == [b.id] and "rca" not in resolved[0]
    bad = await client.get("/api/incidents?status=sleeping")
    assert bad.status_code == 400 and "active" in bad.json()["error"]
    assert (await client.get("/api/incidents?limit=x")).status_code == 400


async def test_incident_detail_has_timeline_rca_approval_and_runs(api):
    client, deps = api
    inc, _ = await deps.store.open_incident("container:web", "died", "web died")
    entry = TimelineEntry(kind="note", text="looked at the logs")
    await deps.store.update_incident(inc.id, entry=entry, detail={"approval_id": "ap-1"})
    await deps.store.put_rca(Rca(incident_id=inc.id, summary="oom", category="oom"))
    await deps.store.put_approval(
        Approval(
            id="ap-1",
            incident_id=inc.id,
            action_hash="h",
            action={"action": "restart", "target": "container:web"},
            approver="ops@example.test",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    await deps.store.put_run(Run(id="r1", kind="action", subject="container:web", status="ok"))
    body = (await client.get(f"/api/incidents/{inc.id}")).json()
    assert [t["kind"] for t in body["incident"]["timeline"]][-1] == "note"
    assert body["rca"]["category"] == "oom"
    assert [a["id"] for a in body["approvals"]] == ["ap-1"]
    assert "action_hash" not in body["approvals"][0]
    assert [r["id"] for r in body["runs"]] == ["r1"]
    missing = await client.get("/api/incidents/999")
    assert missing.status_code == 404 and "/api/incidents" in missing.json()["error"]


async def test_jobs_and_their_runs(api):
    client, deps = api
    await deps.store.upsert_job(Job(id="invoice-bot", bot="invoicer", status="ok"))
    await deps.store.put_run(Run(id="run-1", subject="invoice-bot", status="ok", log=["x"]))
    await deps.store.put_run(Run(id="run-2", subject="other", status="failed"))
    jobs = (await client.get("/api/jobs")).json()["jobs"]
    assert [j["id"] for j in jobs] == ["invoice-bot"]
    runs = (await client.get("/api/jobs/invoice-bot/runs")).json()
    assert [r["id"] for r in runs["runs"]] == ["run-1"]
    assert (await client.get("/api/jobs/nope/runs")).status_code == 404
    recent = (await client.get("/api/runs")).json()["runs"]
    assert {r["id"] for r in recent} == {"run-1", "run-2"} and "log" not in recent[0]


async def test_audit_shows_entries_and_chain_status(api):
    client, deps = api
    for n in range(3):
        await deps.auditor.record(actor="t", transport="test", tool=f"note:{n}", outcome="note")
    body = (await client.get("/api/audit?limit=2")).json()
    assert [e["seq"] for e in body["entries"]] == [3, 2]
    assert body["chain"]["ok"] is True and body["chain"]["checked"] == 3


async def test_events_by_cursor(api):
    client, deps = api
    events = [Event(id=f"e{n}", source="test", type="ping", data={"n": n}) for n in range(5)]
    await deps.bus.publish(events)
    latest = (await client.get("/api/events?limit=2")).json()
    assert [e["data"]["n"] for e in latest["events"]] == [3, 4] and latest["head"] == 5
    after = (await client.get("/api/events?cursor=1&limit=2")).json()
    assert [e["seq"] for e in after["events"]] == [2, 3] and after["cursor"] == 3


async def test_host_metrics_now_and_history(api):
    client, _ = api
    now = (await client.get("/api/metrics/host")).json()
    assert {"cpu", "memory", "swap", "disks", "load"} <= set(now) and "top_cpu" not in now
    history = (await client.get("/api/metrics/host/history")).json()
    assert len(history["points"]) == 1  # a second read within 5 s reuses the first
    assert {"t", "cpu", "mem"} <= set(history["points"][0])


async def test_secrets_are_redacted_from_api_output(authed):
    client, deps = authed
    await deps.store.open_incident("container:web", "died", f"crashed with token {TOKEN}")
    r = await client.get("/api/incidents", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and TOKEN not in r.text and "crashed with token" in r.text


# --- host history (pure buffer logic) ------------------------------------------------------


async def test_host_history_rate_limits_and_keeps_a_ring(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    clock = SimpleNamespace(now=100.0)
    calls: list[int] = []

    class FakeHost:
        async def read_host(self, _thresholds: Any) -> Any:
            calls.append(1)
            at = datetime.fromtimestamp(1_700_000_000 + len(calls), UTC)
            return SimpleNamespace(
                at=at,
                cpu=SimpleNamespace(percent=float(len(calls))),
                memory=SimpleNamespace(percent=50.0),
                swap=SimpleNamespace(percent=0.0),
                load=SimpleNamespace(load1=0.5),
                disks=[],
            )

    build_services(deps, docker=False, overrides=Overrides(host=FakeHost()))
    history = HostHistory(deps, size=3, min_interval_s=5, clock=lambda: clock.now)
    assert (await history.sample())[1] is True
    assert (await history.sample())[1] is False  # within 5 s: the same reading
    for _ in range(4):
        clock.now += 5
        await history.sample()
    assert [p["cpu"] for p in history.points()] == [3.0, 4.0, 5.0] and len(calls) == 5


# --- live stream -----------------------------------------------------------------------------


async def test_stream_pushes_new_events_with_their_seq(api):
    _, deps = api
    head = await deps.bus.head()
    stream = _web(deps)._sse(head)
    assert (await anext(stream)).startswith("retry:")
    await deps.bus.publish([Event(id="x1", source="incident", type="incident.opened", target="t")])
    frame = await anext(stream)
    assert frame.startswith(f"id: {head + 1}\nevent: message\ndata: ")
    assert '"type":"incident.opened"' in frame
    await stream.aclose()


def test_stream_collapses_floods_of_ingest_events():
    def ev(seq: int, source: str, target: str | None = None) -> Event:
        return Event(seq=seq, id=f"e{seq}", source=source, type="t", target=target)

    events = [ev(1, "ingest", "job:a"), ev(2, "incident"), ev(3, "hub:wss://h", "job:b")]
    events += [ev(n, "ingest", "job:a") for n in range(4, 100)]
    rows = stream_rows(events)
    assert [(r["seq"], r["type"]) for r in rows] == [(2, "t"), (99, "ingest.batch")]
    assert rows[1]["data"] == {"count": 98, "targets": ["job:a", "job:b"]}


async def test_stream_needs_a_token_when_auth_is_on(authed):
    client, _ = authed
    r = await client.get("/api/stream")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    bad = await client.get("/api/stream?cursor=x", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status_code == 400


# --- auth and approvals ----------------------------------------------------------------------


async def test_with_auth_the_api_and_metrics_need_the_token_but_the_page_does_not(authed):
    client, _ = authed
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/static/app.js")).status_code == 200
    for path in ("/api/overview", "/api/incidents", "/metrics"):
        r = await client.get(path)
        assert r.status_code == 401, path
        assert "Authorization: Bearer" in r.json()["error"]
    wrong = await client.get("/api/overview", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = await client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["dashboard"]["auth"] is True


async def test_approvals_are_refused_without_auth(api):
    client, _ = api
    r = await client.post("/api/approvals/ap-1", json={"decision": "approve"})
    assert r.status_code == 403 and "OPSMEDIC_AUTH__TOKENS" in r.json()["error"]


async def test_approvals_need_a_handler_a_token_and_a_valid_decision(authed):
    client, deps = authed
    auth = {"Authorization": f"Bearer {TOKEN}"}
    approve = {"decision": "approve"}
    assert (await client.post("/api/approvals/ap-1", json=approve)).status_code == 401
    unknown = await client.post("/api/approvals/ap-1", json=approve, headers=auth)
    assert unknown.status_code == 409 and "no approval" in unknown.json()["error"]
    swap(deps, approvals=None)  # a server without an approval handler says so
    missing = await client.post("/api/approvals/ap-1", json=approve, headers=auth)
    assert missing.status_code == 501

    seen: list[tuple[str, str, str]] = []

    class Approvals:
        async def decide_from_dashboard(self, approval_id: str, decision: str, actor: str) -> dict:
            seen.append((approval_id, decision, actor))
            return {"status": "approved"}

    swap(deps, approvals=Approvals())
    bad = await client.post("/api/approvals/ap-1", json={"decision": "maybe"}, headers=auth)
    assert bad.status_code == 400
    r = await client.post("/api/approvals/ap-1", json={"decision": "deny"}, headers=auth)
    assert r.status_code == 200 and r.json()["result"] == {"status": "approved"}
    assert seen == [("ap-1", "deny", r.json()["actor"])]
    assert seen[0][2].startswith("dashboard:token-")


async def test_a_rejected_decision_is_a_409_with_the_reason(authed):
    client, deps = authed

    class Approvals:
        async def decide_from_dashboard(self, *_args: str) -> DecisionOutcome:
            return DecisionOutcome("rejected", "expired")

    swap(deps, approvals=Approvals())
    r = await client.post(
        "/api/approvals/ap-1",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 409 and r.json()["error"].startswith("rejected:")


# --- /metrics bookkeeping ----------------------------------------------------------------


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample (labels must match exactly); KeyError when absent."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise KeyError(f"{name}{labels}")


async def test_metrics_count_audit_entries_incrementally(api):
    client, deps = api
    record = deps.auditor.record
    await record(actor="a", transport="http", tool="list_incidents", outcome="ok", duration_ms=3)
    await record(actor="a", transport="http", tool="restart", outcome="started")
    for outcome in ("started", "ok"):  # the healer's own records around a restart
        await record(actor="a", transport="internal", tool="action:restart",
                     target="container:web", outcome=outcome)  # fmt: skip
    await record(actor="a", transport="http", tool="restart", outcome="ok", duration_ms=1200)
    await record(actor="a", transport="http", tool="note:x", outcome="note")
    await deps.bus.publish([Event(id="i1", source="ingest", type="run.started")])
    text = (await client.get("/metrics")).text
    calls = "opsmedic_tool_calls_total"
    assert _metric(text, calls, tool="list_incidents", outcome="ok") == 1
    assert _metric(text, calls, tool="restart", outcome="ok") == 1
    with pytest.raises(KeyError):  # "started" pre-records and notes are not calls
        _metric(text, calls, tool="restart", outcome="started")
    assert _metric(text, "opsmedic_actions_total", type="restart", outcome="ok") == 1
    assert _metric(text, "opsmedic_restarts_total", target_kind="container") == 1
    bucket = "opsmedic_tool_call_seconds_bucket"
    assert _metric(text, bucket, tool="restart", le="1.0") == 0
    assert _metric(text, bucket, tool="restart", le="2.5") == 1
    assert _metric(text, "opsmedic_ingest_events_total") == 1
    assert _metric(text, "opsmedic_audit_chain_ok") == 1
    await record(actor="a", transport="http", tool="list_incidents", outcome="error", duration_ms=1)
    again = (await client.get("/metrics")).text
    assert _metric(again, calls, tool="list_incidents", outcome="ok") == 1  # not counted twice
    assert _metric(again, calls, tool="list_incidents", outcome="error") == 1
    assert _metric(again, "opsmedic_audit_entries") == 7
