"""(a) crash -> running again: OpsMedic (heal mode) beside Docker's own --restart=always.

Both are timed from the engine's own event timestamps: `die` of a crash to the next `start`
of the same container, so the numbers compare like with like. N containers each crash once
(a marker file makes the second run stay up), so every OpsMedic restart is a *first* restart
(no backoff), which is what Docker's first restart is too.

Run: .venv/bin/python bench/bench_heal_latency.py [N]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
import uuid

import docker
from _common import describe, docker_engine
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.settings import Settings
from tests.services import ensure_busybox_image

CRASH_ONCE = "if [ -f /ran ]; then sleep 3600; else touch /ran; sleep 0.5; exit 3; fi"


def follow(client: docker.DockerClient, tag: str, gaps: dict[str, float], stop: threading.Event):
    dies: dict[str, int] = {}
    for ev in client.api.events(decode=True, filters={"type": "container"}):
        if stop.is_set():
            return
        name = ev.get("Actor", {}).get("Attributes", {}).get("name", "")
        if not name.startswith(tag):
            continue
        action, t = ev.get("Action"), int(ev.get("timeNano", 0))
        if action == "die" and name not in gaps:
            dies[name] = t
        elif action == "start" and name in dies and name not in gaps:
            gaps[name] = (t - dies[name]) / 1e9


def run_batch(client, image, n, tag, **kw) -> dict[str, float]:
    gaps: dict[str, float] = {}
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(client, tag, gaps, stop), daemon=True)
    thread.start()
    time.sleep(0.3)
    made = []
    for i in range(n):
        box = client.containers.run(
            image,
            ["sh", "-c", CRASH_ONCE],
            detach=True,
            name=f"{tag}{i}",
            network_mode="none",
            **kw,
        )
        made.append(box)
        deadline = time.monotonic() + 30
        while f"{tag}{i}" not in gaps and time.monotonic() < deadline:
            time.sleep(0.02)
    stop.set()
    for c in made:
        c.remove(force=True)
    return gaps


async def opsmedic_batch(client, image, n) -> dict[str, float]:
    settings = Settings(
        data_dir=tempfile.mkdtemp(prefix="bench-heal-"),
        mode="heal",
        policy={"global_max_per_hour": 10_000, "max_concurrent": 4, "verify_stable_s": 0.2},
    )
    tag = f"om-{uuid.uuid4().hex[:4]}-"
    async with Client(create_server(settings)):
        return await asyncio.to_thread(
            run_batch, client, image, n, tag, labels={"opsmedic.managed": "true"}
        )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with docker_engine():
        client = docker.from_env()
        image = ensure_busybox_image(client)
        own = run_batch(client, image, n, f"dk-{uuid.uuid4().hex[:4]}-",
                        restart_policy={"Name": "always"})  # fmt: skip
        ours = asyncio.run(opsmedic_batch(client, image, n))
    print("crash -> running again (engine die -> start timestamps)")
    print(f"  docker --restart=always : {describe(list(own.values()))}")
    print(f"  opsmedic heal mode      : {describe(list(ours.values()))}")
    import statistics

    ratio = statistics.median(ours.values()) / statistics.median(own.values())
    print(f"  ratio (median)          : {ratio:.2f}x Docker's own (aim <= 2x)")


if __name__ == "__main__":
    main()
