"""Event sources beat for their duty: the docker event follower's keepalive."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

from mcp_server.backends.docker.events import follow_events
from mcp_server.core.duties import Duties, supervise


class _QuietStream:
    """A connected events stream on which nothing happens until it is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.closed.wait(10)
        yield from ()

    def close(self) -> None:
        self.closed.set()


async def _state_of(reg: Duties, name: str, want: str, timeout: float = 10.0) -> str:
    for _ in range(int(timeout / 0.01)):  # a generous deadline, polled
        if (shown := reg.get(name, "")).startswith(want):
            return shown
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} is {reg.get(name)!r}, not {want!r}")


async def _follow(open_stream: Any) -> None:
    async with aclosing(follow_events(open_stream, keepalive_s=0.02)) as events:
        async for _ in events:
            pass


async def test_a_connected_quiet_stream_keeps_the_duty_running() -> None:
    reg = Duties()
    task = asyncio.create_task(
        supervise(
            reg, "docker-events", lambda: _follow(lambda _since: _QuietStream()), interval_s=5.0
        )
    )
    try:
        assert await _state_of(reg, "docker-events", "running") == "running"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_engine_shows_as_waiting_and_recovers() -> None:
    reg = Duties()
    reachable = threading.Event()

    def open_stream(_since: str | None) -> _QuietStream:
        if not reachable.is_set():
            raise ConnectionError("no socket")
        return _QuietStream()

    task = asyncio.create_task(
        supervise(reg, "docker-events", lambda: _follow(open_stream), interval_s=5.0)
    )
    try:
        shown = await _state_of(reg, "docker-events", "waiting")
        assert shown == "waiting: docker engine unreachable; reconnecting"
        reachable.set()  # the follower reconnects by itself (backoff up to 30 s)
        await _state_of(reg, "docker-events", "running", timeout=60)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
