"""Docker Swarm: detection latency beside the watcher's interval, and the cost of listings.

On a real 3-manager swarm in network namespaces (tests/swarm_support.py; needs root):
(a) task failure -> incident: a service whose tasks exit 2 at once; timed from the engine's
    timestamp of the task failure that reaches the failure threshold to the incident's
    opened_at (both on this host's clock);
(b) node down -> incident: SIGKILL one node's dockerd; timed from the kill to the incident,
    with the time the manager itself took to report the node (heartbeat) printed beside;
(c) listing 50 services through the list_services tool: time and output chars per service.
OpsMedic runs in-process (check mode) with swarm.poll_s = POLL_S.

Run: .venv/bin/python bench/bench_swarm.py [N]   (N trials each for a and b, default 10)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from typing import Any

import docker
from _common import describe
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.settings import Settings
from tests.swarm_support import SwarmCluster, can_run_swarm, running_swarm, wait_for

POLL_S = 1.0
FAILURES = 3
LISTED = 50


async def _incident(deps: Deps, target: str, after: float, resolved: bool = False) -> Any:
    """The incident on `target` opened after `after` (resolved=True: once it is resolved)."""
    async with asyncio.timeout(180):
        while True:
            for inc in await deps.store.list_incidents(limit=500):
                fresh = inc.target == target and inc.opened_at.timestamp() >= after - 1
                if fresh and (not resolved or inc.status.value == "resolved"):
                    return inc
            await asyncio.sleep(0.05)


def _threshold_failure(api: docker.APIClient, name: str) -> float:
    """Engine time of the FAILURES-th failed task of service `name`."""

    def got() -> float | None:
        failed = [
            t for t in api.tasks(filters={"service": name}) if t["Status"]["State"] == "failed"
        ]
        if len(failed) < FAILURES:
            return None
        stamps = sorted(_ts(t["Status"]["Timestamp"]) for t in failed)
        return stamps[FAILURES - 1]

    return wait_for(got, 60, f"{FAILURES} failed tasks of {name}", step=0.1)


def _ts(text: str) -> float:
    main, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{main}.{(frac + '000000')[:6]}+00:00").timestamp()


async def bench_task_failures(sw: SwarmCluster, deps: Deps, n: int) -> list[float]:
    api, out = sw.api(), []
    for i in range(n):
        name = f"fail{i}"
        start = time.time()
        sw.create_service(
            name,
            ["sh", "-c", "echo boom >&2; exit 2"],
            replicas=2,
            restart_policy=docker.types.RestartPolicy("any", delay=200_000_000),
        )
        inc = await _incident(deps, f"service:{name}", start)
        at = await asyncio.to_thread(_threshold_failure, api, name)
        out.append(max(0.0, inc.opened_at.timestamp() - at))
        api.remove_service(name)
    return out


async def bench_node_down(sw: SwarmCluster, deps: Deps, n: int) -> tuple[list[float], list[float]]:
    api, node = sw.api(timeout=10), sw.nodes[2]
    ours, engine = [], []
    for _ in range(n):
        killed = time.time()
        node.stop(signal.SIGKILL)
        seen = await asyncio.to_thread(wait_for, lambda: _reported(api, node.hostname), 120, "down")
        inc = await _incident(deps, f"node:{node.hostname}", killed)
        ours.append(inc.opened_at.timestamp() - killed)
        engine.append(seen - killed)
        node.start()
        await asyncio.to_thread(wait_for, lambda: sw.ready_nodes() == 3, 120, "node back")
        await asyncio.to_thread(
            wait_for, lambda: not _reported(api, node.hostname), 120, "reachable"
        )
        await _incident(deps, f"node:{node.hostname}", killed, resolved=True)
    return ours, engine


def _reported(api: docker.APIClient, host: str) -> float | None:
    for doc in api.nodes():
        if doc["Description"]["Hostname"] == host:
            reach = (doc.get("ManagerStatus") or {}).get("Reachability")
            if doc["Status"]["State"] != "ready" or reach not in (None, "reachable"):
                return time.time()
    return None


async def bench_listing(sw: SwarmCluster, client: Client) -> None:
    for i in range(LISTED):
        sw.create_service(f"list{i:02d}", ["sleep", "3600"], replicas=1)
    api = sw.api()
    wait_for(
        lambda: (
            sum(1 for s in api.services(status=True) if s["ServiceStatus"]["RunningTasks"])
            >= LISTED
        ),
        180,
        "50 services running",
    )
    samples, chars = [], 0
    for _ in range(20):
        t0 = time.perf_counter()
        got = await client.call_tool("list_services", {})
        samples.append(time.perf_counter() - t0)
        chars = len(got.content[0].text)
    print(f"list_services, {LISTED} services:  {describe(samples)}")
    print(f"  output {chars} chars, {chars / LISTED:.0f} chars per service")
    print(f"  e.g. {(got.structured_content or {})['services'][0]}")


async def main(n: int) -> None:
    with running_swarm() as sw:
        settings = Settings(
            data_dir=tempfile.mkdtemp(prefix="bench-om-"),
            mode="check",
            swarm={"docker_host": sw.manager.host, "poll_s": POLL_S, "task_failures": FAILURES},
        )
        deps = Deps.build(settings)
        logging.getLogger("mcp_server").setLevel(logging.ERROR)
        await deps.start()
        async with Client(create_server(settings, deps, docker=False)) as client:
            print(f"swarm watcher interval (swarm.poll_s): {POLL_S * 1000:.0f} ms, N={n}")
            tasks = await bench_task_failures(sw, deps, n)
            print(f"(a) task failure #{FAILURES} -> incident:  {describe(tasks)}")
            ours, engine = await bench_node_down(sw, deps, n)
            print(f"(b) node killed -> incident:        {describe(ours)}")
            print(f"    node killed -> manager reports: {describe(engine)}")
            gap = [o - e for o, e in zip(ours, engine, strict=True)]
            print(
                f"    OpsMedic after the manager:     median {statistics.median(gap) * 1000:.0f} ms"
            )
            await bench_listing(sw, client)
        with contextlib.suppress(Exception):
            await deps.stop()


if __name__ == "__main__":
    why = can_run_swarm()
    if why:
        print(f"bench_swarm skipped: {why}")
        sys.exit(0)
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
