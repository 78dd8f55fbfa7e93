"""A fleet on one store: two real `opsmedic run` processes on one MongoDB-wire server and one
Docker engine. One incident per fault, one triage per incident, each row naming the instance
that saw or acted; both listed with heartbeats; a killed instance is raised by the other (and
resolved when it comes back); the fleet view read in a real headless Chromium."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pymongo

from mcp_server.app import create_http_app, create_server
from mcp_server.deps import Deps
from mcp_server.services import Overrides
from tests.helpers import make_settings, wait_until
from tests.integration._run_support import MANAGED, OpsRun, cli
from tests.integration.test_dashboard import ARTIFACTS, chromium
from tests.integration.test_dashboard import pytestmark as needs_chromium
from tests.integration.web_support import serve_app

pytestmark = needs_chromium  # both tests read the fleet view in a real browser
BEAT_S = 2.0  # OPSMEDIC_POLICY__HEARTBEAT_S for the fleet under test
ROW = "#fleet-instances tr[data-instance=%s][data-state=%s]"
AUDIT_KEYS = "fleet1:" + "0123456789abcdef" * 4  # a fleet shares its audit keys


def _fleet(run: OpsRun) -> dict[str, dict[str, Any]]:
    return {i["instance"]: i for i in run.get("/api/fleet")["instances"]}


def _states(run: OpsRun) -> dict[str, str]:
    return {name: i["state"] for name, i in _fleet(run).items()}


def _open(run: OpsRun, target: str) -> list[dict[str, Any]]:
    return [i for i in run.incidents(target) if i["status"] != "resolved"]


def _triaged(run: OpsRun, target: str) -> dict[str, Any] | None:
    rows = run.incidents(target)
    if not rows:
        return None
    detail = run.get(f"/api/incidents/{rows[0]['id']}")
    return detail if detail["rca"] else None


def test_two_instances_on_one_mongo_share_incidents_and_raise_a_killed_one(
    tmp_path: Path, docker_host: str, docker_env: Any, mongo_url: str
) -> None:
    store = f"{mongo_url}/fleet_{uuid.uuid4().hex[:8]}"
    env = {"OPSMEDIC_STORE_URL": store, "DOCKER_HOST": docker_host,
           "OPSMEDIC_POLICY__HEARTBEAT_S": str(BEAT_S),
           "OPSMEDIC_AUDIT__KEYS": AUDIT_KEYS}  # fmt: skip
    alpha = OpsRun(tmp_path, "alpha", "--mode", "check", OPSMEDIC_INSTANCE="alpha", **env)
    beta = OpsRun(tmp_path, "beta", "--mode", "check", OPSMEDIC_INSTANCE="beta", **env)
    back: OpsRun | None = None
    runs = [alpha.start(), beta.start()]
    try:
        wait_until(lambda: _states(alpha) == {"alpha": "live", "beta": "live"}, timeout=30)
        status = cli(tmp_path / "cli", "status", OPSMEDIC_STORE_URL=store)
        listed = re.findall(r"^(alpha|beta)\s+(live|SILENT|stopped)\s", status.stdout, re.M)
        assert sorted(listed) == [("alpha", "live"), ("beta", "live")], status.stdout

        box = docker_env.run("crasher", "sleep 1; echo 'fatal: boom' >&2; exit 3", labels=MANAGED)
        target = f"container:{box.name}"
        triaged = wait_until(lambda: _triaged(alpha, target), timeout=90)
        inc = triaged["incident"]
        assert len(beta.incidents(target)) == 1  # one incident across the fleet
        assert inc["instance"] in ("alpha", "beta")
        assert inc["timeline"][0]["actor"] == inc["instance"]  # opened by who saw it

        t_kill = time.monotonic()
        beta.kill()  # kill -9: no goodbye heartbeat
        silent = wait_until(lambda: _open(alpha, "instance:beta"), timeout=10 * BEAT_S)[0]
        latency = time.monotonic() - t_kill
        print(f"\nkill -9 -> incident instance:beta in {latency:.1f}s (heartbeat {BEAT_S:g}s)")
        seen = alpha.incident(silent["id"])
        assert (seen["symptom"], seen["instance"], seen["severity"]) == (
            "silent",
            "alpha",
            "critical",
        )
        assert seen["detail"]["seen_by"] == "alpha" and seen["detail"]["silent_s"] > 2 * BEAT_S
        assert alpha.incidents("instance:alpha") == []  # never reports itself
        metrics = httpx.get(alpha.base + "/metrics", timeout=10).text
        assert 'opsmedic_fleet_instances{state="silent"} 1.0' in metrics
        assert 'opsmedic_fleet_instances{state="live"} 1.0' in metrics
        asyncio.run(_fleet_in_browser(alpha.base, tmp_path / "profile"))

        back = OpsRun(tmp_path, "beta2", "--mode", "check", OPSMEDIC_INSTANCE="beta", **env)
        runs.append(back.start())
        wait_until(lambda: alpha.incident(silent["id"])["status"] == "resolved", timeout=30)
    finally:
        for run in runs:
            run.close()
    db = pymongo.MongoClient(store).get_default_database()
    # every audit entry names its instance; the incident's triage came from one of them
    entries = list(db.audit.find({}, {"instance": 1, "tool": 1, "incident_id": 1}))
    assert {e.get("instance") for e in entries} == {"alpha", "beta"}
    rca_by = {e["instance"] for e in entries if e["tool"] == "record_rca"
              and e.get("incident_id") == inc["id"]}  # fmt: skip
    assert len(rca_by) == 1, rca_by  # one actor per action
    verify = cli(tmp_path / "cli", "audit", "verify", OPSMEDIC_STORE_URL=store,
                 OPSMEDIC_AUDIT__KEYS=AUDIT_KEYS)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def _fleet_in_browser(base: str, profile: Path) -> None:
    async with chromium(profile) as page:
        await page.goto(base + "/")
        ready = (  # !!: an element returned by value is {}, which reads as false
            "!!(document.getElementById('fleet').dataset.ready"
            f" && document.querySelector('{ROW % ('beta', 'silent')}')"
            f" && document.querySelector('{ROW % ('alpha', 'live')}'))"
        )
        try:
            await page.wait_for(ready)
        except TimeoutError:
            shown = await page.evaluate("document.getElementById('fleet').outerHTML")
            raise AssertionError(f"{shown}\n{page.errors}") from None
        summary = await page.evaluate("document.getElementById('fleet-summary').textContent")
        assert summary == "1 live, 1 silent", summary
        swarm_hidden = await page.evaluate("document.getElementById('fleet-swarm').hidden")
        assert swarm_hidden  # no Swarm backend: nodes and services are not shown
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "fleet.png"
        await page.screenshot(shot)
        print(f"fleet view screenshot: {shot}")
        assert page.errors == [], page.errors


class FixedSwarm:
    """The FleetSource contract (core/fleet.py) with fixed rows: this test is about how the
    page draws nodes and replica bars; the Swarm backend's own tests read a real swarm."""

    async def fleet_services(self) -> list[dict[str, Any]]:
        return [
            {"name": "web", "mode": "replicated", "desired": 3, "running": 3},
            {"name": "worker", "mode": "replicated", "desired": 4, "running": 1},
            {"name": "<b>x</b>", "mode": "global", "desired": 2, "running": 0},
        ]

    async def fleet_nodes(self) -> list[dict[str, Any]]:
        return [
            {"name": "m1", "role": "manager", "state": "ready", "availability": "active",
             "leader": True},
            {"name": "w1", "role": "worker", "state": "down", "availability": "active"},
        ]  # fmt: skip


async def test_fleet_view_draws_swarm_nodes_and_replica_bars(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, instance="alpha")
    deps = Deps.build(settings)
    server = create_server(
        settings, deps, docker=False, overrides=Overrides(fleet_source=FixedSwarm())
    )
    app = create_http_app(server, settings)
    async with serve_app(app) as base, chromium(tmp_path / "profile") as page:
        await page.goto(base + "/")
        await page.wait_for("!!document.getElementById('fleet').dataset.ready")
        bars = await page.evaluate(
            "Array.from(document.querySelectorAll('#fleet-services tr')).map((tr) => ["
            "tr.dataset.service, tr.querySelectorAll('.replica.up').length,"
            " tr.querySelectorAll('.replica.down').length])"
        )
        assert bars == [["web", 3, 0], ["worker", 1, 3], ["<b>x</b>", 0, 2]]  # text, not markup
        nodes = await page.evaluate(
            "Array.from(document.querySelectorAll('#fleet-nodes tr')).map((tr) => tr.innerText)"
        )
        assert "m1 (leader)" in nodes[0] and "down" in nodes[1]
        assert not await page.evaluate("document.getElementById('fleet-swarm').hidden")
        shot = ARTIFACTS / "fleet-swarm.png"
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(shot)
        print(f"\nfleet view (swarm) screenshot: {shot}")
        assert page.errors == [], page.errors
