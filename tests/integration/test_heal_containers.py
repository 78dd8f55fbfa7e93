"""Detection and policy-bound restarts against a real Docker engine, through MCP."""

from __future__ import annotations

import itertools
import time

import anyio
import anyio.lowlevel
import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus
from tests.helpers import make_settings

MANAGED = {"opsmedic.managed": "true"}
CRASH_SOON = "echo starting; sleep 0.5; echo 'fatal: cannot connect to db' >&2; exit 3"
# crashes on its first run only: the marker survives a restart of the same container
CRASH_ONCE = "if [ -f /ran ]; then echo ok; sleep 3600; else touch /ran; sleep 1; exit 3; fi"


class FakeClock:
    """Real time plus an offset that policy sleeps advance instantly."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += seconds
        await anyio.lowlevel.checkpoint()


@pytest.fixture
async def heal_server(tmp_path, docker_host):
    clock = FakeClock()
    settings = make_settings(
        tmp_path, mode="heal", policy={"verify_stable_s": 1.5, "verify_timeout_s": 15}
    )
    deps = Deps.build(settings)
    deps.clock, deps.sleep = clock, clock.sleep
    await deps.start()
    server = create_server(settings, deps)
    async with Client(server) as client:
        yield client, deps, clock
    await deps.stop()


async def _wait_incident(deps, target, statuses=None, timeout=20.0):
    with anyio.fail_after(timeout):
        while True:
            for inc in await deps.store.list_incidents(limit=50):
                if inc.target == target and (statuses is None or inc.status in statuses):
                    return inc
            await anyio.sleep(0.05)


def _started_at(docker_env, container) -> str:
    return docker_env._get(container).attrs["State"]["StartedAt"]


async def test_managed_crash_is_detected_restarted_and_verified(heal_server, docker_env):
    client, deps, _ = heal_server
    first = await client.call_tool("wait_for_events", {})
    cursor = first.structured_content["cursor"]
    box = docker_env.run("web", CRASH_ONCE, labels=MANAGED)
    target = f"container:{box.name}"
    opened: list[dict] = []
    with anyio.fail_after(15):
        while not opened:
            got = await client.call_tool("wait_for_events", {"cursor": cursor, "timeout_s": 5})
            cursor = got.structured_content["cursor"]
            events = got.structured_content["events"]
            opened = [e for e in events if e.get("target") == target and e["source"] != "docker"]
    assert opened[0]["type"] == "incident.opened"
    inc = await _wait_incident(deps, target, {IncidentStatus.resolved})
    assert any("verified" in t.text for t in inc.timeline)
    assert docker_env._get(box).status == "running"
    entries = [e for e in await deps.store.audit_entries() if e.tool == "action:restart"]
    assert [e.outcome for e in entries][:2] == ["started", "ok"]


async def test_unmanaged_container_is_never_touched(heal_server, docker_env):
    client, deps, _ = heal_server
    box = docker_env.run("db", "sleep 0.5; exit 1")
    target = f"container:{box.name}"
    await _wait_incident(deps, target)
    docker_env.wait_status(box, "exited")
    started = _started_at(docker_env, box)
    r = await client.call_tool(
        "restart", {"target": target, "reason": "try anyway"}, raise_on_error=False
    )
    assert r.is_error and "opsmedic.managed=true" in r.content[0].text
    refusals = [
        e for e in await deps.store.audit_entries() if e.target == target and e.outcome == "refused"
    ]
    # the tool call is refused and audited; the server itself never tries a target that is
    # out of scope (no automatic attempt, no audit noise every reconcile pass)
    assert refusals and all(e.actor != "opsmedic" for e in refusals)
    assert _started_at(docker_env, box) == started
    assert docker_env._get(box).status == "exited"


async def test_crash_loop_follows_budget_then_escalates(heal_server, docker_env):
    _client, deps, clock = heal_server
    box = docker_env.run("loop", CRASH_SOON, labels=MANAGED)
    target = f"container:{box.name}"
    inc = await _wait_incident(deps, target, {IncidentStatus.escalated}, timeout=60)
    starts = (await deps.services.actions.ledger()).history(target)
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # backoff 10 s then 20 s (fake clock), plus the real seconds each verify took
    assert 10 <= gaps[0] < 16 and 20 <= gaps[1] < 26, gaps
    # the server waited out the rest of each backoff (measured from the previous restart)
    waits = [s for s in clock.slept if s > 0.1]  # not the re-looks after a failed verify
    assert 5 < waits[0] <= 10 and 15 < waits[1] <= 20, clock.slept
    assert "budget" in inc.timeline[-1].text.lower() or "escalat" in inc.timeline[-1].text.lower()
    # left alone: no further restart after escalation
    before = _started_at(docker_env, box)
    await anyio.sleep(2)
    assert _started_at(docker_env, box) == before
    assert len((await deps.services.actions.ledger()).history(target)) == 3


async def test_oom_is_reported_as_oom(heal_server, docker_env):
    client, deps, _ = heal_server
    box = docker_env.run(
        "hog",
        "sleep 0.3; dd if=/dev/zero of=/dev/shm/fill bs=1M count=64; sleep 5",
        mem_limit="16m",
        memswap_limit="16m",
        shm_size="128m",
    )
    docker_env.wait_status(box, "exited", timeout=20)
    detail = await client.call_tool("inspect_container", {"name": box.name})
    state = detail.structured_content["state"]
    assert state["oom_killed"] is True or state["exit_code"] == 137
    inc = await _wait_incident(deps, f"container:{box.name}")
    assert inc.symptom == "oom"


async def test_check_mode_refuses_with_remedy(tmp_path, docker_host, docker_env):
    settings = make_settings(tmp_path, mode="check")
    box = docker_env.run("web", labels=MANAGED)
    async with Client(create_server(settings)) as c:
        r = await c.call_tool(
            "restart", {"target": f"container:{box.name}", "reason": "test"}, raise_on_error=False
        )
        listed = await c.call_tool("list_containers", {"selector": "opsmedic.managed=true"})
    assert r.is_error and "OPSMEDIC_MODE=heal" in r.content[0].text
    assert any(box.name in line for line in listed.structured_content["containers"])
