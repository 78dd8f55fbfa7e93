"""The duties registry: heartbeats, stalls, waiting, the deps.tasks mapping, supervise()."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest

from mcp_server.core import duties
from mcp_server.core.duties import Duties, every, keepalive, supervise
from mcp_server.errors import Unavailable
from tests.helpers import ManualClock

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def reg(clock: ManualClock) -> Duties:
    return Duties(clock=clock, tolerance=2.0)


def test_a_duty_that_beats_runs_and_one_that_stops_beating_stalls(reg, clock):
    reg.add("host-metrics", 10.0)
    reg.beat("host-metrics")
    clock.now += dt.timedelta(seconds=19)
    assert reg["host-metrics"] == "running" and not reg.unhealthy()
    clock.now += dt.timedelta(seconds=2)  # 21 s > 10 s x 2
    view = reg.view("host-metrics")
    assert view.state == "stalled" and not view.healthy and view.age_s == 21
    assert reg["host-metrics"] == "stalled: no progress for 21 s (expected every 10 s)"
    reg.beat("host-metrics")  # recovers by itself
    assert reg["host-metrics"] == "running" and reg.view("host-metrics").age_s == 0


def test_a_duty_that_never_beats_stalls_after_its_grace(reg, clock):
    reg.add("docker-events", 5.0)
    assert reg.view("docker-events").state == "starting" and not reg.unhealthy()
    clock.now += dt.timedelta(seconds=11)
    assert reg["docker-events"].startswith("stalled: no progress since start")
    assert [v.name for v in reg.unhealthy()] == ["docker-events"]


def test_waiting_on_a_dependency_is_shown_and_recovers(reg, clock):
    reg.add("imap-replies", 40.0)
    reg.beat("imap-replies")
    reg.set("imap-replies", "waiting", "IMAP 127.0.0.1:1430 unreachable (retry in 8 s)")
    clock.now += dt.timedelta(seconds=300)
    view = reg.view("imap-replies")
    assert reg["imap-replies"] == "waiting: IMAP 127.0.0.1:1430 unreachable (retry in 8 s)"
    assert view.state == "waiting" and view.healthy and view.age_s == 300
    reg.beat("imap-replies")
    assert reg["imap-replies"] == "running"


def test_failed_and_stopped_are_unhealthy_idle_is_not(reg):
    reg.add("a", 5.0)
    reg.add("b", 5.0)
    reg.add("c", 5.0)
    reg.set("a", "failed", "RuntimeError: boom")
    reg.set("b", "stopped")
    reg.set("c", "idle", "another OpsMedic holds the lease")
    assert [v.name for v in reg.unhealthy()] == ["a", "b"]


def test_the_mapping_keeps_older_readers_and_writers_working(reg, clock):
    reg["store"] = "running"  # a plain status: no progress expected
    reg["old"] = "idle: source ended"
    clock.now += dt.timedelta(days=1)
    assert dict(reg) == {"store": "running", "old": "idle: source ended"}
    assert not reg.unhealthy()
    reg["store"] = "stopped"
    assert reg["store"] == "stopped" and [v.name for v in reg.unhealthy()] == ["store"]
    del reg["old"]
    assert list(reg) == ["store"] and len(reg) == 1


def test_views_list_probes_after_the_other_duties(reg):
    for name in ("probe:api", "store-probe", "probe:db", "docker-events"):
        reg.add(name, 10.0)
    names = [v.name for v in reg.views()]
    assert names == ["docker-events", "store-probe", "probe:api", "probe:db"]
    assert reg.views()[0].as_json()["last_progress_age_s"] is None


def test_beat_outside_a_duty_does_nothing():
    duties.beat()
    duties.waiting("nothing")
    duties.register("probe:x", 1.0)


async def test_supervise_gives_the_duty_to_its_coroutines(reg):
    seen = asyncio.Event()

    async def work() -> None:
        duties.register("probe:api", 30.0)
        duties.beat("probe:api", "last check ok")
        duties.beat()
        seen.set()
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervise(reg, "probes-ish", work, interval_s=10.0))
    await asyncio.wait_for(seen.wait(), 10)
    assert reg["probes-ish"] == "running"
    assert reg["probe:api"] == "running: last check ok"
    assert reg.view("probe:api").interval_s == 30.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reg["probes-ish"] == "stopped"


@pytest.mark.parametrize(
    ("error", "shown", "healthy"),
    [
        (
            Unavailable("IMAP 127.0.0.1:1 unreachable"),
            "waiting: IMAP 127.0.0.1:1 unreachable",
            True,
        ),
        (RuntimeError("boom"), "failed: RuntimeError: boom", False),
    ],
)
async def test_supervise_shows_why_a_duty_is_not_running(reg, error, shown, healthy):
    failed = asyncio.Event()

    async def work() -> None:
        failed.set()
        raise error

    task = asyncio.create_task(supervise(reg, "d", work, interval_s=10.0))
    await asyncio.wait_for(failed.wait(), 10)
    await asyncio.sleep(0)  # supervise records the state right after the raise
    assert reg["d"].startswith(shown) and reg.view("d").healthy is healthy
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_every_beats_after_each_step(reg):
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await supervise(reg, "approval-expiry", lambda: every(0.0, step), interval_s=30.0)
    duty = reg.get_duty("approval-expiry")
    assert steps == 3 and duty is not None and duty.last_beat is not None


async def test_keepalive_beats_while_a_quiet_source_waits(reg):
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def source() -> AsyncIterator[int]:
        while True:
            yield await queue.get()

    got: list[int] = []

    async def consume() -> None:
        async for item in keepalive(source(), 0.01):
            got.append(item)

    task = asyncio.create_task(supervise(reg, "process-exits", consume, interval_s=5.0))
    for _ in range(500):  # generous deadline: the first keepalive after 0.01 s
        await asyncio.sleep(0.01)
        if reg["process-exits"] == "running":
            break
    assert reg["process-exits"] == "running"
    await queue.put(7)
    for _ in range(500):
        await asyncio.sleep(0.01)
        if got:
            break
    assert got == [7]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
