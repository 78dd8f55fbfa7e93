"""A fleet watching a real swarm: two `opsmedic run --mode heal` processes on one MongoDB-wire
store, each pointed at a different manager of the 3-manager swarm in namespaces.

One incident per failing service across the fleet, never two restarts of it at once, both
instances listed with heartbeats, the swarm's services (replica bars) and nodes in the fleet
view read in a real Chromium, and a killed instance raised by the other.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pymongo

from tests.helpers import wait_until
from tests.integration._run_support import FAST_POLICY, MANAGED, OpsRun
from tests.integration.test_dashboard import ARTIFACTS, chromium
from tests.integration.test_dashboard import pytestmark as needs_chromium
from tests.integration.test_swarm import CRASHY
from tests.swarm_support import SwarmCluster

pytestmark = needs_chromium
BEAT_S = 2.0
AUDIT_KEYS = "fleet1:" + "0123456789abcdef" * 4  # a fleet shares its audit keys


def _open(run: OpsRun, target: str) -> list[dict[str, Any]]:
    return [i for i in run.incidents(target) if i["status"] != "resolved"]


def _overlap(runs: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Pairs of action records on one subject whose [started, finished] intervals overlap."""
    spans = sorted((_ts(r["started_at"]), _ts(r.get("finished_at"))) for r in runs)
    return [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]


def test_two_instances_on_two_managers_heal_a_service_once_and_see_each_other(
    tmp_path: Path, swarm_cluster: SwarmCluster, mongo_url: str
) -> None:
    store = f"{mongo_url}/swfleet_{uuid.uuid4().hex[:8]}"
    env = {**FAST_POLICY, "OPSMEDIC_STORE_URL": store, "OPSMEDIC_AUDIT__KEYS": AUDIT_KEYS,
           "OPSMEDIC_POLICY__HEARTBEAT_S": str(BEAT_S), "OPSMEDIC_POLICY__VERIFY_TIMEOUT_S": "90",
           "OPSMEDIC_SWARM__POLL_S": "1", "OPSMEDIC_SWARM__SHORTFALL_S": "5"}  # fmt: skip
    flags = tmp_path / "flags"
    flags.mkdir()
    runs: list[OpsRun] = []
    try:
        for n, name in enumerate(("alpha", "beta")):
            host = swarm_cluster.nodes[n].host  # each watches its own manager
            run = OpsRun(tmp_path, name, "--mode", "heal", OPSMEDIC_INSTANCE=name,
                         OPSMEDIC_SWARM__DOCKER_HOST=host, **env)  # fmt: skip
            runs.append(run.start())
        alpha, beta = runs
        swarm_cluster.create_service(
            "fleetsvc", ["sh", "-c", CRASHY], replicas=2, labels=MANAGED,
            mounts=[docker.types.Mount("/flag", str(flags), type="bind", read_only=True)],
            restart_policy=docker.types.RestartPolicy("on-failure", delay=500_000_000,
                                                      max_attempts=2),
        )  # fmt: skip
        target = "service:fleetsvc"
        inc = wait_until(lambda: alpha.incidents(target), timeout=90)[0]
        (flags / "ok").write_text("db is back")  # the next rolling restart comes up
        try:
            wait_until(lambda: alpha.incident(inc["id"])["status"] == "resolved", timeout=180)
        except TimeoutError:
            seen = [t["text"] for t in alpha.incident(inc["id"])["timeline"]]
            said = [
                ln
                for r in runs
                for ln in r.log().splitlines()
                if "uvicorn" not in ln
                and "reconcile: container" not in ln
                and "docker events" not in ln
            ]
            raise AssertionError("\n".join(seen + said[-60:])) from None
        assert len(beta.incidents(target)) == 1, beta.incidents(target)  # one across the fleet

        fleet = wait_until(lambda: _fleet_ready(alpha), timeout=30)
        assert {i["instance"]: i["state"] for i in fleet["instances"]} == {
            "alpha": "live",
            "beta": "live",
        }
        svc = next(s for s in fleet["services"] if s["name"] == "fleetsvc")
        assert (svc["desired"], svc["running"]) == (2, 2), svc
        assert {n["name"] for n in fleet["nodes"]} == {n.hostname for n in swarm_cluster.nodes}
        asyncio.run(_swarm_in_browser(alpha.base, tmp_path / "profile"))

        t_kill = time.monotonic()
        beta.kill()
        silent = wait_until(lambda: _open(alpha, "instance:beta"), timeout=10 * BEAT_S)[0]
        print(f"\nkill -9 -> instance:beta in {time.monotonic() - t_kill:.1f}s (beat {BEAT_S}s)")
        assert alpha.incident(silent["id"])["instance"] == "alpha"
    finally:
        for run in runs:
            run.close()
        swarm_cluster.remove_services()
    db = pymongo.MongoClient(store).get_default_database()
    actions = list(db.runs.find({"kind": "action", "subject": target}))
    assert _overlap(actions) == [], actions  # one actor at a time on the service
    holders = {a["detail"].get("holder", "").split(":")[0] for a in actions}
    assert holders <= {"alpha", "beta"}, holders


def _ts(value: Any) -> float:
    """A stored time (ISO text or datetime) as epoch seconds; None (still running) is +inf."""
    if value is None:
        return float("inf")
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.timestamp()


def _fleet_ready(run: OpsRun) -> dict[str, Any] | None:
    fleet: dict[str, Any] = run.get("/api/fleet")
    svc = [s for s in fleet["services"] if s["name"] == "fleetsvc"]
    live = [i for i in fleet["instances"] if i["state"] == "live"]
    return fleet if svc and svc[0]["running"] == 2 and len(live) == 2 else None


async def _swarm_in_browser(base: str, profile: Path) -> None:
    async with chromium(profile) as page:
        await page.goto(base + "/")
        ready = "!!document.querySelector('#fleet-services tr[data-service=fleetsvc]')"
        try:
            await page.wait_for(ready)
        except TimeoutError:
            shown = await page.evaluate("document.getElementById('fleet').outerHTML")
            raise AssertionError(f"{shown}\n{page.errors}") from None
        up = await page.evaluate(
            "document.querySelectorAll('#fleet-services tr[data-service=fleetsvc] .replica.up')"
            ".length"
        )
        assert up == 2
        nodes = await page.evaluate("document.querySelectorAll('#fleet-nodes tr').length")
        assert nodes == 3
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "fleet-real-swarm.png"
        await page.screenshot(shot)
        print(f"fleet view on a real swarm: {shot}")
        assert page.errors == [], page.errors
