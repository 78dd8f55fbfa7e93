"""Alertmanager -> OpsMedic, for real: a prometheus-alertmanager on loopback notifies a real
OpsMedic HTTP server (uvicorn on a free port) through its webhook with bearer auth."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mcp_server.deps import Deps
from mcp_server.models import Incident, IncidentStatus, Severity
from tests.helpers import make_settings, wait_until
from tests.integration._run_support import OpsRun
from tests.integration.alertmanager_support import Alertmanager
from tests.integration.web_support import opsmedic_http

TOKEN = "alertmanager-receiver-token-77"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MANAGED = {"opsmedic.managed": "true"}
PATH = "/api/alerts/alertmanager"

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus-alertmanager") is None,
    reason="prometheus-alertmanager missing: run scripts/install-deps.sh",
)

Starter = Callable[[str, str], Alertmanager]


@pytest.fixture
def alertmanager() -> Iterator[Starter]:
    """start(webhook_url, token) -> a running Alertmanager; all stopped by pid at the end."""
    started: list[Alertmanager] = []

    def start(webhook_url: str, token: str) -> Alertmanager:
        am = Alertmanager(webhook_url=webhook_url, token=token)
        started.append(am)  # before start(): a half-started one is stopped too
        am.start()
        return am

    try:
        yield start
    finally:
        for am in started:
            am.stop()


@pytest.fixture
async def opsmedic(tmp_path, docker_host) -> AsyncIterator[tuple[str, Deps]]:
    settings = make_settings(tmp_path / "data", mode="check", auth={"tokens": TOKEN})
    async with opsmedic_http(settings) as pair:
        yield pair


async def _eventually(probe: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll probe() until it returns something truthy (against a deadline, no fixed sleep)."""
    async with asyncio.timeout(timeout):
        while not (value := await probe()):
            await asyncio.sleep(0.1)
    return value


async def _incidents(deps: Deps, target: str) -> list[Incident]:
    return [i for i in await deps.store.list_incidents(None, limit=200) if i.target == target]


async def test_an_alert_reaches_opsmedic_as_one_incident_and_resolves(
    opsmedic, alertmanager, docker_env
):
    base, deps = opsmedic
    box = docker_env.run("am-web", labels=MANAGED)
    target = f"container:{box.name}"
    am = alertmanager(base + PATH, TOKEN)
    labels = {"alertname": "ContainerDown", "container": box.name, "severity": "critical"}
    await am.post_alert(labels, summary=f"{box.name} is down")

    async def bumped() -> Incident | None:
        found = await _incidents(deps, target)
        return found[0] if found and found[0].count >= 2 else None

    inc = await _eventually(bumped)  # repeat notifications bump it: still one incident
    assert len(await _incidents(deps, target)) == 1
    assert inc.symptom == "alert:ContainerDown" and inc.severity is Severity.critical
    assert inc.detail["fingerprint"] and inc.detail["alert_group"]
    assert inc.detail["generator_url"].startswith("http://prometheus.test/")

    await am.post_alert(labels, resolved=True)

    async def resolved() -> Incident | None:
        now = await deps.store.get_incident(inc.id)
        return now if now and now.status is IncidentStatus.resolved else None

    done = await _eventually(resolved)
    assert "resolved by Alertmanager" in done.timeline[-1].text
    assert len(await _incidents(deps, target)) == 1
    audit = [e for e in await deps.store.recent_audit(200) if e.tool == "alerts:alertmanager"]
    assert len(audit) >= 3


async def test_an_unmapped_alert_is_an_incident_on_alert_name(opsmedic, alertmanager):
    base, deps = opsmedic
    am = alertmanager(base + PATH, TOKEN)
    await am.post_alert({"alertname": "DiskWillFill", "device": "sda"})
    inc = (await _eventually(lambda: _incidents(deps, "alert:DiskWillFill")))[0]
    assert inc.symptom == "alert:DiskWillFill" and inc.severity is Severity.warning


async def test_a_wrong_token_is_refused_and_nothing_is_stored(opsmedic, alertmanager):
    base, deps = opsmedic
    am = alertmanager(base + PATH, TOKEN)
    await am.post_alert({"alertname": "Sneaky", "opsmedic_test": "badtoken"})

    async def failed() -> bool:
        return await am.failed_webhook_notifications() >= 1

    await _eventually(failed)  # Alertmanager got the 401 from OpsMedic
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        body = {"version": "4"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = await client.post(PATH, json=body, headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert await deps.store.list_incidents(None) == []


async def test_a_malformed_payload_is_400_with_the_reason(opsmedic):
    base, deps = opsmedic
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        r = await client.post(PATH, json={"version": "4", "alerts": []}, headers=AUTH)
        assert r.status_code == 400 and "groupKey" in r.json()["error"]
        r = await client.post(PATH, content=b"[", headers=AUTH)
        assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert await deps.store.list_incidents(None) == []


async def test_in_heal_mode_a_running_target_is_left_to_a_person(
    tmp_path, docker_host, docker_env, alertmanager
):
    """The healer restarts what is down; an alert about a running container (in scope or
    not) keeps one open incident, is never acted on and is resolved by Alertmanager."""
    settings = make_settings(tmp_path / "data", mode="heal", auth={"tokens": TOKEN})
    managed = docker_env.run("am-heal", labels=MANAGED)
    stranger = docker_env.run("am-stranger")  # not in scope
    started = {c.name: _started_at(docker_env, c) for c in (managed, stranger)}
    since = datetime.now(UTC) - timedelta(minutes=1)
    async with opsmedic_http(settings) as (base, deps):
        am = alertmanager(base + PATH, TOKEN)
        for box in (managed, stranger):
            await am.post_alert({"alertname": "AppHung", "container": box.name})

        async def alert_incidents() -> list[Incident]:
            found = await _incidents(deps, f"container:{managed.name}")
            return [i for i in found if i.symptom.startswith("alert:")]

        async def repeated() -> bool:
            found = await alert_incidents()
            return bool(found) and found[0].count >= 3

        await _eventually(repeated)
        everything = await _incidents(deps, f"container:{managed.name}")
        alerts = await alert_incidents()
        assert len(alerts) == 1, [(i.symptom, i.status, i.title) for i in everything]
        inc = alerts[0]
        assert inc.status is IncidentStatus.open
        assert any("not restarted" in t.text for t in inc.timeline)
        assert await deps.store.list_actions(since) == []
        await am.post_alert({"alertname": "AppHung", "container": managed.name}, resolved=True)

        async def resolved() -> bool:
            now = await deps.store.get_incident(inc.id)
            return now is not None and now.status is IncidentStatus.resolved

        await _eventually(resolved)
    for box in (managed, stranger):
        assert _started_at(docker_env, box) == started[box.name]


def _started_at(docker_env: Any, box: Any) -> str:
    return str(docker_env._get(box).attrs["State"]["StartedAt"])


async def test_opsmedic_run_diagnoses_an_alert_on_a_managed_container_from_its_logs(
    tmp_path, docker_host, docker_env, alertmanager
):
    """`opsmedic run` (server + runner): a firing alert whose labels name a managed container
    is one incident on that container, bumped by repeat notifications, and the runner's
    rules RCA quotes the alert and decides from the container's own logs."""
    refused = "dial tcp 10.0.0.5:5432: connect: connection refused"
    box = docker_env.run("am-logs", f'while true; do echo "{refused}"; sleep 1; done',
                         labels=MANAGED)  # fmt: skip
    started = _started_at(docker_env, box)
    target = f"container:{box.name}"
    run = OpsRun(tmp_path, "am", "--mode", "check", DOCKER_HOST=docker_host,
                 OPSMEDIC_AUTH__TOKENS=TOKEN)  # fmt: skip
    try:
        await asyncio.to_thread(run.start)
        am = alertmanager(run.base + PATH, TOKEN)
        labels = {"alertname": "DbUnreachable", "container": box.name, "severity": "critical"}
        await am.post_alert(labels, summary=f"{box.name} cannot reach its database")

        def diagnosed() -> dict[str, Any] | None:
            rows = run.incidents(target)
            if not rows or rows[0]["count"] < 2:
                return None
            detail = run.get(f"/api/incidents/{rows[0]['id']}")
            return detail if detail["rca"] else None

        detail = await asyncio.to_thread(wait_until, diagnosed, 60, 0.3)
        assert [r["symptom"] for r in run.incidents(target)] == ["alert:DbUnreachable"]
        rca = detail["rca"]
        assert rca["category"] == "dependency" and rca["author"] == "rules"
        assert "DbUnreachable" in rca["summary"] and "cannot reach its database" in rca["summary"]
        lines = {(e["source"], e["line"]) for e in rca["evidence"]}
        assert (
            "alertmanager:DbUnreachable",
            f"summary: {box.name} cannot reach its database",
        ) in lines
        assert any(src == target and refused in line for src, line in lines)
    finally:
        run.close()
    assert _started_at(docker_env, box) == started  # check mode, and a running target
