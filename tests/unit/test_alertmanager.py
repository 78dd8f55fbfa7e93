"""Alertmanager as an incident source: payload validation, label -> target mapping, and the
receiver over ASGI (auth, dedupe by fingerprint, resolve, audit, evidence redacted)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mcp_server.app import create_http_app, create_server
from mcp_server.core.alertmanager import map_target, parse_notification, severity_of
from mcp_server.deps import Deps
from mcp_server.drivers.base import TargetState
from mcp_server.errors import InvalidInput
from mcp_server.models import IncidentStatus, Severity
from tests.helpers import make_settings, swap

TOKEN = "alertmanager-token-for-unit-tests-1"
URL = "/api/alerts/alertmanager"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def alert(status: str = "firing", fingerprint: str = "f1", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "Down", **labels},
        "annotations": {"summary": "web is down", "description": "password=hunter2secret"},
        "startsAt": "2026-12-02T07:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.local/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="Down"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "opsmedic",
        "groupLabels": {"alertname": "Down"},
        "commonLabels": {"alertname": "Down"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": list(alerts),
    }


# --- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "probes", "want"),
    [
        ({"opsmedic_target": "process:worker", "container": "x"}, (), "process:worker"),
        ({"container": "web"}, (), "container:web"),
        ({"name": "db"}, (), "container:db"),
        ({"container_label_com_docker_swarm_service_name": "api"}, (), "service:api"),
        ({"job": "api", "instance": "10.0.0.1:80"}, ("api",), "probe:api"),
        ({"job": "api", "instance": "10.0.0.1:80"}, ("other",), "alert:Down"),
        ({"job": "api"}, ("api",), "alert:Down"),
        ({}, (), "alert:Down"),
        ({"container": " "}, (), "alert:Down"),
    ],
)
def test_labels_map_to_a_target(labels, probes, want):
    assert map_target({"alertname": "Down", **labels}, probes) == want


def test_an_explicit_target_must_parse():
    with pytest.raises(InvalidInput, match="kind:name"):
        map_target({"alertname": "Down", "opsmedic_target": "no colon here"})


def test_severity_comes_from_the_label():
    assert severity_of({"severity": "critical"}) is Severity.critical
    assert severity_of({"severity": "INFO"}) is Severity.info
    assert severity_of({"severity": "page-me"}) is Severity.warning
    assert severity_of({}) is Severity.warning


def test_a_valid_payload_parses():
    note = parse_notification(payload(alert(container="web")))
    assert note.alerts[0].fingerprint == "f1" and note.alerts[0].labels["container"] == "web"
    assert note.group_key.startswith("{}")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p.update(version="3"), "version"),
        (lambda p: p.pop("groupKey"), "groupKey"),
        (lambda p: p.update(status="exploded"), "status"),
        (lambda p: p["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda p: p["alerts"][0].update(labels={"a": 1}), "alerts.0.labels.a"),
        (lambda p: p["alerts"][0].update(startsAt="yesterday"), "alerts.0.startsAt"),
        (lambda p: p.update(alerts="none"), "alerts"),
    ],
)
def test_a_malformed_payload_names_the_problem(mutate, reason):
    body = payload(alert(container="web"))
    mutate(body)
    with pytest.raises(InvalidInput, match=reason.replace(".", r"\.")):
        parse_notification(body)


# --- the receiver over ASGI ----------------------------------------------------------------


async def _client(tmp_path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Deps]]:
    deps = Deps.build(make_settings(tmp_path, **settings))
    await deps.start()
    server = create_server(deps.settings, deps, docker=False)
    transport = httpx.ASGITransport(app=create_http_app(server, deps.settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, deps
    await deps.stop()


@pytest.fixture
async def authed(tmp_path):
    async for pair in _client(tmp_path, auth={"tokens": TOKEN}, mode="check"):
        yield pair


async def test_without_auth_tokens_the_receiver_is_refused(tmp_path):
    async for client, deps in _client(tmp_path):
        r = await client.post(URL, json=payload(alert(container="web")))
        assert r.status_code == 403 and "OPSMEDIC_AUTH__TOKENS" in r.json()["error"]
        assert await deps.store.list_incidents(None) == []


async def test_a_missing_or_wrong_token_is_401_and_nothing_is_stored(authed):
    client, deps = authed
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        r = await client.post(URL, json=payload(alert(container="web")), headers=headers)
        assert r.status_code == 401
    assert await deps.store.list_incidents(None) == []


async def test_malformed_is_400_with_the_reason_and_nothing_is_stored(authed):
    client, deps = authed
    r = await client.post(URL, content=b"{not json", headers=AUTH)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    bad = payload(alert(container="web"), alert(fingerprint="f2", opsmedic_target="nope"))
    r = await client.post(URL, json=bad, headers=AUTH)
    assert r.status_code == 400 and "nope" in r.json()["error"]
    r = await client.post(URL, json={"version": "4"}, headers=AUTH)
    assert r.status_code == 400 and "groupKey" in r.json()["error"]
    assert await deps.store.list_incidents(None) == []


async def test_firing_bumps_one_incident_then_resolved_resolves_it(authed):
    client, deps = authed
    body = payload(alert(container="web", severity="critical"))
    for _ in range(2):
        r = await client.post(URL, json=body, headers=AUTH)
        assert r.status_code == 200, r.text
    [inc] = await deps.store.list_incidents(None)
    assert (inc.target, inc.symptom, inc.count) == ("container:web", "alert:Down", 2)
    assert inc.severity is Severity.critical and "web is down" in inc.title
    assert inc.detail["fingerprint"] == "f1" and inc.detail["alert_group"] == body["groupKey"]
    assert inc.detail["generator_url"].startswith("http://prometheus.local/")
    assert "hunter2secret" not in str(inc.detail)
    done = payload(alert("resolved", container="web"), status="resolved")
    assert (await client.post(URL, json=done, headers=AUTH)).json()["alerts"][0]["resolved"]
    inc = await deps.store.get_incident(inc.id)
    assert inc is not None and inc.status is IncidentStatus.resolved
    assert "resolved by Alertmanager" in inc.timeline[-1].text
    audit = [e for e in await deps.store.recent_audit(20) if e.tool == "alerts:alertmanager"]
    assert len(audit) == 3 and all(e.transport == "http" for e in audit)


async def test_one_incident_stays_open_while_another_fingerprint_fires(authed):
    client, deps = authed
    both = payload(alert(fingerprint="a", job="x"), alert(fingerprint="b", job="y"))
    assert (await client.post(URL, json=both, headers=AUTH)).status_code == 200
    [inc] = await deps.store.list_incidents(None)
    assert inc.target == "alert:Down" and inc.detail["fingerprints"] == ["a", "b"]
    one = payload(alert("resolved", fingerprint="a", job="x"))
    await client.post(URL, json=one, headers=AUTH)
    inc = await deps.store.get_incident(inc.id)
    assert inc is not None and inc.status is not IncidentStatus.resolved
    other = payload(alert("resolved", fingerprint="b", job="y"))
    await client.post(URL, json=other, headers=AUTH)
    inc = await deps.store.get_incident(inc.id)
    assert inc is not None and inc.status is IncidentStatus.resolved


async def test_in_heal_mode_only_a_mapped_target_that_is_down_goes_to_the_autoheal(tmp_path):
    considered: list[str] = []

    class Recorder:  # the real AutoHealer's policy is tested elsewhere; here: what reaches it
        def consider(self, inc: Any) -> None:
            considered.append(inc.target)

    class Driver:
        async def state(self, name: str) -> TargetState:
            return TargetState(running=name == "up", detail="running" if name == "up" else "")

    class Drivers:
        restartable = frozenset({"container"})

        def of(self, _target: Any) -> Driver:
            return Driver()

    async for client, deps in _client(tmp_path, auth={"tokens": TOKEN}, mode="heal"):
        swap(deps, autoheal=Recorder(), drivers=Drivers())
        body = payload(
            alert(container="down"),
            alert(fingerprint="f2", container="up"),
            alert(fingerprint="f3"),
        )
        assert (await client.post(URL, json=body, headers=AUTH)).status_code == 200
        assert considered == ["container:down"]
        [up] = [i for i in await deps.store.list_incidents(None) if i.target == "container:up"]
        assert "not restarted" in up.timeline[-1].text


async def test_alert_incidents_show_in_the_dashboard_api(authed):
    client, _deps = authed
    await client.post(URL, json=payload(alert(), alert(fingerprint="f2", container="web")),
                      headers=AUTH)  # fmt: skip
    overview = await client.get("/api/overview", headers=AUTH)
    assert overview.status_code == 200
    rows = (await client.get("/api/incidents", headers=AUTH)).json()["incidents"]
    assert {r["target"] for r in rows} == {"alert:Down", "container:web"}
    for row in rows:
        detail = await client.get(f"/api/incidents/{row['id']}", headers=AUTH)
        assert detail.status_code == 200 and "hunter2secret" not in detail.text
