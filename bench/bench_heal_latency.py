"""(a) crash -> running again: OpsMedic (heal mode) beside Docker's own --restart=always.

Both are timed from the engine's own event timestamps: `die` of a crash to the next `start`
of the same container, so the numbers compare like with like. OpsMedic runs in-process
(create_server + fastmcp Client, so its lifespan duties run: event watcher, auto-healer,
reconciler), on a private Docker engine unless DOCKER_HOST is set.

1. exit: N containers each crash once by themselves (exit 3; a marker file makes the second
   run stay up), so every restart is a *first* restart on both sides.
2. kill -9: ONE long-running managed container (sleep 3600) and its unmanaged twin with
   --restart=always are crashed N times each by a host-side SIGKILL of their main process
   (os.kill(State.Pid), as the OOM killer or an operator would). Crashes are spaced so both
   sides restart as a *first* restart every time: Docker resets its restart back-off once the
   container ran 10 s, and OpsMedic's budget window (window_s) is shorter than the spacing.
   Restarts per crash counts the engine's `start` events of the managed container (aim
   exactly 1.0) and its `kill` events (a restart of a running container; aim 0).

Run: .venv/bin/python bench/bench_heal_latency.py [N]   (N default 20; ~12 s per kill -9 crash)
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import docker
from _common import Call, EngineEvents, describe, docker_engine, p95, wait_settled, with_opsmedic

from tests.services import ensure_busybox_image

CRASH_ONCE = "if [ -f /ran ]; then sleep 3600; else touch /ran; sleep 0.5; exit 3; fi"
MANAGED = {"opsmedic.managed": "true"}
DOCKER_RESET_S = 10.5  # Docker resets its restart back-off once a container ran 10 s
# Every kill -9 crash is a first restart: the window is shorter than the crash spacing.
POLICY: dict[str, Any] = {
    "global_max_per_hour": 10_000,
    "max_concurrent": 4,
    "verify_stable_s": 0.2,
    "window_s": 8.0,
    "max_restarts": 3,
    "base_delay_s": 0.0,
    "healthy_reset_s": 5.0,
    "reconcile_s": 30.0,
}


def run(client: docker.DockerClient, image: str, name: str, cmd: list[str], **kw: Any) -> Any:
    return client.containers.run(image, cmd, detach=True, name=name, network_mode="none", **kw)


# --- 1. exit: N containers crash once by themselves ------------------------------------------


def exit_batch(
    client: docker.DockerClient, image: str, n: int, tag: str, made: list[Any], **kw: Any
) -> list[float]:
    """(Containers go to `made`; the caller removes them once OpsMedic is stopped, so their
    removal is not taken for a failure.)"""
    events = EngineEvents(client, tag)
    gaps = []
    for i in range(n):
        made.append(run(client, image, f"{tag}{i}", ["sh", "-c", CRASH_ONCE], **kw))
        die = events.wait_for(f"{tag}{i}", "die", 0)
        gaps.append((events.wait_for(f"{tag}{i}", "start", die) - die) / 1e9)
    return gaps


# --- 2. kill -9 of one long-running container, N times --------------------------------------


@dataclass
class Twin:
    """One long-running container crashed repeatedly, with its crash -> running gaps."""

    box: Any
    gaps: list[float] = field(default_factory=list)
    last_start_ns: int = 0

    def crash(self, events: EngineEvents) -> None:
        """SIGKILL its main process from the host; wait for the engine's die and next start."""
        self.box.reload()
        mark = time.time_ns() - 50_000_000  # engine and host share one clock
        os.kill(int(self.box.attrs["State"]["Pid"]), signal.SIGKILL)
        die = events.wait_for(self.box.name, "die", mark)
        self.last_start_ns = events.wait_for(self.box.name, "start", die)
        self.gaps.append((self.last_start_ns - die) / 1e9)


def kill_rounds(
    client: docker.DockerClient, image: str, n: int, call: Call, made: list[Any]
) -> dict[str, Any]:
    tag = f"k9-{uuid.uuid4().hex[:4]}-"
    events = EngineEvents(client, tag)
    ours = Twin(run(client, image, f"{tag}om", ["sleep", "3600"], labels=MANAGED))
    own = Twin(run(client, image, f"{tag}dk", ["sleep", "3600"],
                   restart_policy={"Name": "always"}))  # fmt: skip
    made += [ours.box, own.box]
    time.sleep(DOCKER_RESET_S)  # both have run 10 s: first crash is a first restart
    begin = time.time_ns()
    for i in range(n):
        own.crash(events)
        ours.crash(events)
        wait_settled(call, f"container:{ours.box.name}")
        if i < n - 1:
            rested = max(own.last_start_ns, ours.last_start_ns) / 1e9 + DOCKER_RESET_S
            time.sleep(max(0.0, rested - time.time()))
    time.sleep(1.0)  # a late second restart would show up here
    name = ours.box.name
    counts = {a: events.count(name, a, begin) for a in ("die", "start", "kill", "restart")}
    return {"ours": ours.gaps, "own": own.gaps, "counts": counts}


def remove(made: list[Any]) -> None:
    for box in made:
        box.remove(force=True)
    made.clear()


# --- output ------------------------------------------------------------------------------------


def report(title: str, own: list[float], ours: list[float]) -> None:
    ratio = statistics.median(ours) / statistics.median(own)
    print(title)
    print(f"  docker --restart=always : {describe(own)}")
    print(f"  opsmedic heal mode      : {describe(ours)}")
    print(f"  ratio median            : {ratio:.2f}x Docker's own (aim <= 1.25x)")
    print(f"  ratio p95               : {p95(ours) / p95(own):.2f}x Docker's own")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    shown = " ".join(f"{k}={POLICY[k]}" for k in ("window_s", "max_restarts", "base_delay_s",
                                                   "verify_stable_s"))  # fmt: skip
    print(f"OpsMedic driven in-process (create_server + fastmcp Client), heal mode; {shown}")
    with docker_engine():
        client = docker.from_env()
        image = ensure_busybox_image(client)
        made: list[Any] = []
        own = exit_batch(client, image, n, f"dk-{uuid.uuid4().hex[:4]}-", made,
                         restart_policy={"Name": "always"})  # fmt: skip
        tag = f"om-{uuid.uuid4().hex[:4]}-"
        ours = asyncio.run(
            with_opsmedic(
                "heal", POLICY, lambda c: exit_batch(client, image, n, tag, made, labels=MANAGED)
            )
        )
        remove(made)
        report("(1) exit 3 -> running again, N containers crashing once (die -> start)", own, ours)
        k9 = asyncio.run(
            with_opsmedic("heal", POLICY, lambda c: kill_rounds(client, image, n, c, made))
        )
        remove(made)
    report(f"(2) host kill -9 of one container, {n} crashes spaced >= {DOCKER_RESET_S} s "
           "(die -> start)", k9["own"], k9["ours"])  # fmt: skip
    c = k9["counts"]
    print(
        f"  opsmedic restarts/crash : {c['start'] / n:.2f} ({c['start']} engine starts, "
        f"{c['die']} dies for {n} crashes; aim exactly 1.0)"
    )
    print(
        f"  opsmedic kill events    : {c['kill']} (a restart of a running container; aim 0); "
        f"restart events: {c['restart']}"
    )


if __name__ == "__main__":
    main()
