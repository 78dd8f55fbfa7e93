"""The fleet on one store: who is live, silent or stopped, and the `instance:NAME` incident
raised (once, by another instance) and resolved, on a real SQLite store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.core.fleet import fleet_view, members
from mcp_server.core.health import STORE_DUTY
from mcp_server.deps import Deps
from mcp_server.models import Heartbeat, IncidentStatus
from mcp_server.services import Overrides, build_services
from tests.helpers import make_settings

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def beat(name: str, seconds: float, every: float = 2.0, **extra: object) -> Heartbeat:
    duties = {STORE_DUTY: {"state": "running", "interval_s": every, "healthy": True}}
    return Heartbeat(holder=f"{name}:1:x", instance=name, ts=T0 + timedelta(seconds=seconds),
                     duties=duties, **extra)  # fmt: skip


def test_members_by_name_newest_row_each_judged_by_its_own_interval() -> None:
    now = T0 + timedelta(seconds=10)
    rows = [
        beat("a", 9),
        beat("a", 1),  # a restarted: its newest row counts
        beat("b", 5),
        beat("c", 5, every=10.0),  # b missed 2 beats of 2 s; c beats every 10 s
        beat("d", 0, stopped=True),  # said goodbye
        Heartbeat(holder="cli:host", ts=now, mode="cli"),  # `opsmedic status`: not an instance
    ]
    seen = {m.instance: m for m in members(rows, now, 10.0)}
    assert {n: m.state for n, m in seen.items()} == {
        "a": "live", "b": "silent", "c": "live", "d": "stopped"
    }  # fmt: skip
    assert seen["a"].processes == 2 and seen["b"].age_s == 5.0


class Swarm:
    async def fleet_services(self) -> list[dict[str, object]]:
        return [{"name": "web", "mode": "replicated", "desired": 3, "running": 2}]

    async def fleet_nodes(self) -> list[dict[str, object]]:
        return [{"name": "n1", "role": "manager", "state": "ready", "availability": "active"}]


async def _deps(tmp: Path, name: str, source: object = None) -> Deps:
    settings = make_settings(tmp, instance=name, policy={"heartbeat_s": 2.0})
    deps = Deps.build(settings)
    build_services(deps, docker=False, overrides=Overrides(fleet_source=source))
    await deps.start()
    return deps


async def test_a_silent_instance_is_one_incident_raised_by_another_and_resolved(tmp_path):
    alpha = await _deps(tmp_path, "alpha")
    beta = await _deps(tmp_path, "beta")  # same SQLite file: one store, two instances
    try:
        now = datetime.now(UTC)
        await alpha.store.put_heartbeat(beat("alpha", 0).model_copy(update={"ts": now}))
        old = now - timedelta(seconds=5)  # beta beats every 2 s: 5 s is 2 missed beats
        await alpha.store.put_heartbeat(beat("beta", 0).model_copy(update={"ts": old}))
        await alpha.services.fleet.check(now)
        await beta.services.fleet.check(now)  # beta never reports itself
        await alpha.services.fleet.check(now)  # already open: not counted again
        incs = await alpha.store.list_incidents()
        assert [(i.target, i.symptom, i.instance, i.count) for i in incs] == [
            ("instance:beta", "silent", "alpha", 1)
        ]
        assert incs[0].detail["silent_s"] >= 4.0 and incs[0].detail["seen_by"] == "alpha"
        audit_free = await alpha.store.recent_audit()
        assert audit_free == []  # detection writes incidents, not audit entries
        await alpha.store.put_heartbeat(beat("beta", 0).model_copy(update={"ts": now}))
        await alpha.services.fleet.check(now + timedelta(seconds=0.5))
        inc = await alpha.store.get_incident(incs[0].id)
        assert inc is not None and inc.status == IncidentStatus.resolved
        assert "beta beating again" in inc.timeline[-1].text
    finally:
        await alpha.stop()
        await beta.stop()


async def test_fleet_view_lists_instances_and_the_swarm_when_wired(tmp_path):
    deps = await _deps(tmp_path, "alpha", Swarm())
    try:
        await deps.services.store_probe.check(max_age_s=0.0)
        view = await fleet_view(deps, deps.services.fleet_source)
        [me] = view["instances"]
        assert (me["instance"], me["self"], me["state"], me["interval_s"]) == (
            "alpha", True, "live", 2.0
        )  # fmt: skip
        assert view["swarm"] and view["services"][0]["desired"] == 3
        assert view["nodes"][0]["name"] == "n1"
        bare = await fleet_view(deps, None)
        assert (bare["swarm"], bare["services"], bare["nodes"]) == (False, [], [])
    finally:
        await deps.stop()


async def test_a_clean_stop_says_goodbye_so_no_incident_follows(tmp_path):
    deps = await _deps(tmp_path, "alpha")
    try:
        task = asyncio.create_task(deps.services.store_probe.run())
        for _ in range(200):
            if await deps.store.list_heartbeats(T0):
                break
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        [last] = await deps.store.list_heartbeats(T0)
        assert last.stopped and last.instance == "alpha"
        later = datetime.now(UTC) + timedelta(seconds=60)
        assert [m.state for m in members([last], later, 2.0)] == ["stopped"]
    finally:
        await deps.stop()


async def test_an_occurrence_diagnosed_by_one_instance_is_not_triaged_again_by_another(tmp_path):
    servers = {}
    for name in ("alpha", "beta"):
        settings = make_settings(tmp_path, instance=name)
        servers[name] = create_server(settings, Deps.build(settings), docker=False)
    async with Client(servers["alpha"]) as alpha, Client(servers["beta"]) as beta:
        deps = Deps.build(make_settings(tmp_path))
        await deps.start()
        try:
            inc, _ = await deps.store.open_incident("container:web", "died", "web died")
            claim = {"incident_id": inc.id, "claim": True, "note": "runner: triage started"}
            await alpha.call_tool("update_incident", claim)
            rca = {"summary": "exit 3 after a bad config", "category": "config"}
            await alpha.call_tool("record_rca", {"incident_id": inc.id, "rca": rca})
            await alpha.call_tool("update_incident", {"incident_id": inc.id, "status": "open"})
            refused = await beta.call_tool("update_incident", claim, raise_on_error=False)
            assert refused.is_error and "diagnosed by OpsMedic alpha" in refused.content[0].text
            mine = await alpha.call_tool("update_incident", claim, raise_on_error=False)
            assert not mine.is_error  # the instance that diagnosed it may go on (retries)
            await alpha.call_tool("update_incident", {"incident_id": inc.id, "status": "open"})
            await deps.store.open_incident("container:web", "died", "web died again")
            again = await beta.call_tool("update_incident", claim, raise_on_error=False)
            assert not again.is_error  # seen again: a new occurrence, anyone may triage it
        finally:
            await deps.stop()
