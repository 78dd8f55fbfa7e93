"""Shared bench helpers: a Docker engine (the one in DOCKER_HOST, or a private one) and stats."""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T = TypeVar("T")


@contextlib.contextmanager
def docker_engine() -> Iterator[str]:
    """Yield a DOCKER_HOST url: the environment's, or a throwaway engine started here."""
    host = os.environ.get("OPSMEDIC_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
    if host:
        os.environ["DOCKER_HOST"] = host
        yield host
        return
    from tests.services import DockerEngine

    engine = DockerEngine()
    engine.start()
    os.environ["DOCKER_HOST"] = engine.host
    try:
        yield engine.host
    finally:
        engine.stop()


def describe(samples_s: Sequence[float]) -> str:
    """median / p95 / min / max in milliseconds."""
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"median {statistics.median(ms):8.1f} ms  p95 {p95:8.1f} ms  "
        f"min {ms[0]:7.1f}  max {ms[-1]:7.1f}  (n={len(ms)})"
    )


def p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class EngineEvents:
    """The engine's container events for names starting with `prefix`, with their engine
    timestamps (ns). Read by polling the engine's event history (since/until queries that
    end), not a long-lived stream: a follower thread's stream was seen to stall here."""

    POLL_S = 0.05

    def __init__(self, client: Any, prefix: str) -> None:
        self.api = client.api
        self.prefix = prefix
        self.seen: list[tuple[str, str, int]] = []  # (name, action, timeNano), engine order
        self._keys: set[tuple[str, str, int]] = set()
        self._cursor_ns = time.time_ns() - 1_000_000_000

    def refresh(self) -> None:
        until = time.time() + 0.01
        since = f"{self._cursor_ns / 1e9:.9f}"
        for ev in self.api.events(since=since, until=f"{until:.9f}", decode=True,
                                  filters={"type": "container"}):  # fmt: skip
            name = ev.get("Actor", {}).get("Attributes", {}).get("name", "")
            key = (name, str(ev.get("Action", "")).partition(":")[0], int(ev.get("timeNano", 0)))
            if name.startswith(self.prefix) and key not in self._keys:
                self._keys.add(key)
                self.seen.append(key)
        # re-read the last 2 s each time: an event may be published a little late
        self._cursor_ns = max(self._cursor_ns, int(until * 1e9) - 2_000_000_000)

    def first(self, name: str, action: str, after_ns: int) -> int | None:
        hits = [t for n, a, t in self.seen if n == name and a == action and t > after_ns]
        return min(hits) if hits else None

    def wait_for(self, name: str, action: str, after_ns: int, timeout: float = 30.0) -> int:
        """timeNano of the first `action` of `name` after `after_ns`; TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if (t := self.first(name, action, after_ns)) is not None:
                return t
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {action} of {name} within {timeout:.0f}s")
            time.sleep(self.POLL_S)

    def count(self, name: str, action: str, after_ns: int) -> int:
        self.refresh()
        return sum(1 for n, a, t in self.seen if n == name and a == action and t > after_ns)


# --- OpsMedic in-process: create_server + fastmcp Client, driven from a worker thread ---------

Call = Callable[[str, dict[str, Any]], dict[str, Any]]


async def with_opsmedic(
    mode: str, policy: dict[str, Any], work: Callable[[Call], T], quiet: int = logging.ERROR
) -> T:
    """Run `work(call)` in a thread while an in-process OpsMedic server (its lifespan: event
    watcher, auto-healer, reconciler) runs on this event loop; `call` is a blocking tool call."""
    import asyncio
    import tempfile

    from fastmcp import Client

    from mcp_server.app import create_server
    from mcp_server.settings import Settings

    settings = Settings(data_dir=tempfile.mkdtemp(prefix="bench-om-"), mode=mode, policy=policy)
    loop = asyncio.get_running_loop()
    server = create_server(settings)
    logging.getLogger("mcp_server").setLevel(quiet)  # "incident N opened" x hundreds
    async with Client(server) as client:

        def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
            future = asyncio.run_coroutine_threadsafe(client.call_tool(tool, args), loop)
            return dict(future.result(timeout=30).structured_content or {})

        return await asyncio.to_thread(work, call)


def active_incidents(call: Call, target: str) -> list[dict[str, Any]]:
    rows = call("list_incidents", {"status": "active", "limit": 200})["incidents"]
    return [r for r in rows if r["target"] == target]


def wait_settled(call: Call, target: str, timeout: float = 60.0) -> None:
    """Until `target` has no active incident (restarted, verified, resolved)."""
    deadline = time.monotonic() + timeout
    while active_incidents(call, target):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{target} still has an active incident after {timeout:.0f}s")
        time.sleep(0.1)
