"""(b) `docker stop` / `docker kill` of a managed container -> incident opened.

Timed from the engine's `die` event timestamp to the incident's opened_at (both on this
host's clock). OpsMedic runs in-process (create_server + fastmcp Client) in heal mode, so it
restarts the container after each stop and resolves the incident; the next stop then opens
a new incident. The container traps SIGTERM so `docker stop` does not wait for its timeout.
Also printed: the incident's symptom and OpsMedic's restarts per stop (aim 1.0).

Run: .venv/bin/python bench/bench_stop_detect.py [N]   (N stops and N kills, default 10)
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

import docker
from _common import Call, EngineEvents, describe, docker_engine, wait_settled, with_opsmedic

from mcp_server.core.detection import OWN_MARGIN_S
from tests.services import ensure_busybox_image

TRAPS_TERM = "trap 'exit 0' TERM; sleep 3600 & wait"
POLICY: dict[str, Any] = {
    "global_max_per_hour": 10_000,
    "max_concurrent": 4,
    "verify_stable_s": 0.2,
    "window_s": 8.0,
    "max_restarts": 1000,  # a stop every ~1 s: no budget refusal, no backoff
    "base_delay_s": 0.0,
    "healthy_reset_s": 5.0,
}
DETECT_TIMEOUT_S = 15.0
# OpsMedic takes engine events up to OWN_MARGIN_S after its restart call returned for its
# own, so a stop sooner than that after a heal is not seen (reported as a bug): wait longer.
REST_S = OWN_MARGIN_S + 0.5


def new_incident(call: Call, target: str, seen: set[int]) -> dict[str, Any]:
    """The first incident on target not in `seen`, as get_incident returns it."""
    deadline = time.monotonic() + DETECT_TIMEOUT_S
    while time.monotonic() < deadline:
        rows = call("list_incidents", {"limit": 50})["incidents"]
        fresh = [r for r in rows if r["target"] == target and r["id"] not in seen]
        if fresh:
            seen.add(fresh[0]["id"])
            return call("get_incident", {"incident_id": fresh[0]["id"]})
        time.sleep(0.05)
    raise TimeoutError(f"no incident for {target} within {DETECT_TIMEOUT_S:.0f}s")


def down_up(
    call: Call, box: Any, events: EngineEvents, how: str, seen: set[int]
) -> tuple[float, str]:
    """Take the container down (`stop` or `kill`); (die -> opened_at s, symptom)."""
    mark = time.time_ns() - 50_000_000
    box.stop(timeout=5) if how == "stop" else box.kill()
    die = events.wait_for(box.name, "die", mark)
    inc = new_incident(call, f"container:{box.name}", seen)
    opened = datetime.fromisoformat(inc["opened_at"]).timestamp()
    events.wait_for(box.name, "start", die)  # OpsMedic's restart
    wait_settled(call, f"container:{box.name}")
    time.sleep(REST_S)
    return opened - die / 1e9, inc["symptom"]


def measure(client: docker.DockerClient, image: str, n: int, call: Call) -> dict[str, Any]:
    tag = f"st-{uuid.uuid4().hex[:4]}-"
    events = EngineEvents(client, tag)
    box = client.containers.run(image, ["sh", "-c", TRAPS_TERM], detach=True,
                                name=f"{tag}web", network_mode="none",
                                labels={"opsmedic.managed": "true"})  # fmt: skip
    time.sleep(1.0)
    out: dict[str, Any] = {"box": box}
    seen: set[int] = set()
    for how in ("stop", "kill"):
        begin = time.time_ns()
        runs = [down_up(call, box, events, how, seen) for _ in range(n)]
        time.sleep(0.5)
        out[how] = {
            "gaps": [g for g, _ in runs],
            "symptoms": Counter(s for _, s in runs),
            "starts": events.count(box.name, "start", begin),
        }
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print("OpsMedic driven in-process (create_server + fastmcp Client), heal mode; "
          f"each stop {REST_S:.1f} s after the previous heal was verified")  # fmt: skip
    with docker_engine():
        client = docker.from_env()
        image = ensure_busybox_image(client)
        res = asyncio.run(with_opsmedic("heal", POLICY, lambda c: measure(client, image, n, c)))
        res["box"].remove(force=True)
    print("engine die -> incident opened_at (aim well under 1 s)")
    for how in ("stop", "kill"):
        r = res[how]
        symptoms = ", ".join(f"{k} x{v}" for k, v in r["symptoms"].items())
        print(f"  docker {how:4} : {describe(r['gaps'])}")
        print(f"               symptoms: {symptoms}; OpsMedic restarts per {how}: "
              f"{r['starts'] / n:.2f} (aim 1.0)")  # fmt: skip


if __name__ == "__main__":
    main()
