"""Healing under faults, on a real Docker engine: OpsMedic killed with SIGKILL mid-action,
the target removed mid-verify, and two OpsMedics healing through one MongoDB-wire store."""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from datetime import datetime

import anyio
import pymongo
import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus
from mcp_server.safety.policy import Budget, backoff_delay
from tests.helpers import make_settings, wait_until
from tests.integration._run_support import FAST_POLICY, MANAGED, OpsRun, engine_events, state

HEALTHY = {"test": ["CMD", "test", "-f", "/healthy"], "interval": 300_000_000,
           "timeout": 1_000_000_000, "retries": 1, "start_period": 0}  # fmt: skip
# becomes healthy at start; PID 1 ignores SIGTERM, so `docker restart` takes its 10 s
UNHEALTHY_LATER = "touch /healthy; sleep 3600"


def _status(run: OpsRun, incident_id: int) -> str:
    return str(run.incident(incident_id)["status"])


def _running_since(client, name: str, t0: float) -> bool:
    st = state(client, name)
    started = time.mktime(time.strptime(st["StartedAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    return bool(st["Running"]) and started >= int(t0)


@pytest.mark.parametrize("phase", ["healing", "verifying"])
def test_kill9_of_opsmedic_mid_action_is_resumed_or_abandoned(
    tmp_path, docker_host, docker_env, docker_client, phase
):
    policy = {**FAST_POLICY, "OPSMEDIC_POLICY__VERIFY_STABLE_S": "8"}
    data = tmp_path / "data"
    box = docker_env.run("victim", UNHEALTHY_LATER, labels=MANAGED, healthcheck=HEALTHY)
    target = f"container:{box.name}"
    first = OpsRun(tmp_path, "first", "--mode", "heal", data_dir=data, DOCKER_HOST=docker_host,
                   **policy).start()  # fmt: skip
    try:
        docker_env.client.api.exec_start(docker_env.client.api.exec_create(box.id, "rm /healthy"))
        inc = wait_until(lambda: next(iter(first.incidents(target)), None), timeout=20)
        wait_until(lambda: _status(first, inc["id"]) == phase, timeout=30, interval=0.02)
    finally:
        first.kill()  # SIGKILL: no cleanup, its lease and action record stay behind
    killed_at = time.time()
    second = OpsRun(tmp_path, "second", "--mode", "heal", data_dir=data,
                    DOCKER_HOST=docker_host, **policy).start()  # fmt: skip
    try:
        # leaves healing/verifying by the lease expiry (15 s) + a reconcile pass, not "forever"
        wait_until(lambda: _status(second, inc["id"]) not in ("healing", "verifying"),
                   timeout=40)  # fmt: skip
        assert time.time() - killed_at < 40
        wait_until(lambda: _status(second, inc["id"]) == "resolved", timeout=40)
        wait_until(lambda: state(docker_client, box.name)["Running"], timeout=20)
        # the next crash is healed at once: no blind spot left by the dead holder
        pid = state(docker_client, box.name)["Pid"]
        crashed = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _running_since(docker_client, box.name, crashed), timeout=15)
        assert time.time() - crashed < 15
        runs = second.get("/api/runs?limit=50").get("runs", [])
        taken = [r for r in runs if "taken over" in str(r.get("detail", {}).get("result", ""))]
        assert taken or phase == "verifying", runs
    finally:
        second.close()


async def test_target_removed_mid_verify_leaks_no_slot(tmp_path, docker_host, docker_env):
    settings = make_settings(tmp_path, mode="heal",
                             policy={"verify_stable_s": 4, "verify_timeout_s": 10,
                                     "max_concurrent": 2, "auto_restart": False})  # fmt: skip
    deps = Deps.build(settings)
    await deps.start()
    server = create_server(settings, deps)
    try:
        async with Client(server) as client:
            for name in ("gone-a", "gone-b"):
                box = docker_env.run(name, labels=MANAGED)
                target = f"container:{box.name}"
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(box.kill)
                inc = await _incident(deps, target)

                async def remove_when_verifying(box=box, iid=inc.id):
                    with anyio.fail_after(20):
                        while (await deps.store.get_incident(iid)).status != "verifying":
                            await anyio.sleep(0.02)
                    await anyio.to_thread.run_sync(lambda: box.remove(force=True))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(remove_when_verifying)
                    r = await client.call_tool("restart", {"target": target, "reason": "test",
                                                           "incident_id": inc.id},
                                               raise_on_error=False)  # fmt: skip
                assert r.is_error or not r.structured_content["ok"], r
                with anyio.fail_after(15):
                    while (await deps.store.get_incident(inc.id)).status in (
                        "healing",
                        "verifying",
                    ):
                        await anyio.sleep(0.1)
            other = docker_env.run("other", labels=MANAGED)
            r = await client.call_tool(
                "restart", {"target": f"container:{other.name}", "reason": "after two removals"}
            )
            assert r.structured_content["ok"], r  # no in-flight slot was leaked
        for inc in await deps.store.list_incidents(limit=10):
            assert inc.status not in (IncidentStatus.healing, IncidentStatus.verifying), inc
    finally:
        await deps.stop()


async def _incident(deps: Deps, target: str):
    with anyio.fail_after(10):
        while True:
            for inc in await deps.store.list_incidents(limit=20):
                if inc.target == target:
                    return inc
            await anyio.sleep(0.05)


def test_two_opsmedics_on_one_mongo_share_one_budget(
    tmp_path, docker_host, docker_env, docker_client, mongo_url
):
    store = f"{mongo_url}/fleet_{uuid.uuid4().hex[:8]}"
    policy = {**FAST_POLICY, "OPSMEDIC_POLICY__MAX_RESTARTS": "5",
              "OPSMEDIC_POLICY__WINDOW_S": "120", "OPSMEDIC_POLICY__BASE_DELAY_S": "1",
              "OPSMEDIC_POLICY__VERIFY_STABLE_S": "2"}  # fmt: skip
    runs = [OpsRun(tmp_path, f"n{i}", "--mode", "heal", OPSMEDIC_STORE_URL=store,
                   DOCKER_HOST=docker_host, **policy).start() for i in range(2)]  # fmt: skip
    try:
        t0 = time.time()
        box = docker_env.run("looper", "sleep 1; echo giving up; exit 3", labels=MANAGED)
        target = f"container:{box.name}"
        try:
            row = wait_until(
                lambda: [i for i in runs[0].incidents(target) if i["status"] == "escalated"],
                timeout=120,
            )[0]
        except TimeoutError:
            seen = [runs[0].incident(i["id"]) for i in runs[0].incidents(target)]
            logs = f"{runs[0].log()[-4000:]}\n{runs[1].log()[-4000:]}"
            raise AssertionError(f"{seen}\n{logs}") from None
        time.sleep(4)  # nothing more happens after the escalation
        inc = runs[1].incident(row["id"])
        all_for_target = runs[0].incidents(target)
    finally:
        for run in runs:
            run.close()
    db = pymongo.MongoClient(store).get_default_database()
    actions = sorted(db.runs.find({"kind": "action", "subject": target}),
                     key=lambda r: r["started_at"])  # fmt: skip
    starts = [_ts(a["started_at"]) for a in actions]
    assert 1 <= len(actions) <= 5, starts  # one budget across both processes
    budget = Budget(max_restarts=5, window_s=120, base_delay_s=1)
    for n, (a, b) in enumerate(itertools.pairwise(starts), start=1):
        assert b - a >= backoff_delay(n, budget) - 0.05, (n, starts)  # gaps >= policy
    dies = [e for e in engine_events(docker_client, box.name, t0) if e["Action"] == "die"]
    assert len(all_for_target) == 1  # one incident across the fleet
    assert inc["count"] == len(dies), (inc["count"], len(dies))  # each crash counted once
    timeline = inc["timeline"]
    triage = [i for i, t in enumerate(timeline) if "triage started" in t["text"]]
    rcas = [i for i, t in enumerate(timeline) if t["kind"] == "rca"]
    for a, b in itertools.pairwise(triage):  # one runner at a time: each triage ends in an RCA
        assert any(a < r < b for r in rcas), [t["text"] for t in timeline]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
