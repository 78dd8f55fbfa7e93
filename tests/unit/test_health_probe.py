"""The store probe (a heartbeat write, cached briefly), /healthz verdicts, lease-held duties."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools

from mcp_server.core.duties import supervise, with_lease
from mcp_server.core.health import STORE_DUTY, StoreProbe, health
from mcp_server.deps import Deps
from mcp_server.models import utcnow
from tests.helpers import make_settings


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_probe_writes_caches_and_reports_a_store_that_cannot_be_written(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    ticks = Ticks()
    probe = StoreProbe(deps, cache_s=1.0, monotonic=ticks)
    await deps.start()
    try:
        assert await probe.check() and deps.duties[STORE_DUTY] == "running"
        since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        first = (await deps.store.list_heartbeats(since))[0]
        assert first.holder == deps.holder and first.healthy and first.mode == "check"
        assert await probe.check()  # cached: no second write
        assert (await deps.store.list_heartbeats(since))[0].ts == first.ts
    finally:
        await deps.stop()
    assert await probe.check()  # still cached, though the store is closed now
    ticks.now += 1.5
    assert not await probe.check()
    assert "not open" in probe.error
    assert deps.duties[STORE_DUTY].startswith("waiting: store write failed")


async def test_health_lists_duties_and_fails_on_a_stalled_one(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    probe = StoreProbe(deps, cache_s=0.0)
    deps.duties.add("job-stalls", 15.0)
    deps.duties.get_duty("job-stalls").since -= dt.timedelta(seconds=31)  # type: ignore[union-attr]
    await deps.start()
    try:
        body = await health(deps, probe)
    finally:
        await deps.stop()
    assert body["store"] is True and body["ok"] is False and body["unhealthy"] == ["job-stalls"]
    assert body["tasks"]["job-stalls"].startswith("stalled: no progress since start")
    assert {d["name"] for d in body["duties"]} == {"job-stalls", STORE_DUTY}
    assert set(body) >= {"ok", "store", "tasks", "version", "duties"}


async def test_a_duty_whose_lease_another_instance_holds_is_idle_not_unhealthy(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    started = asyncio.Event()

    async def watch() -> None:
        started.set()
        await asyncio.sleep(3600)

    await deps.start()
    try:
        assert await deps.store.acquire_lease("imap-watcher", "other", 60, utcnow())
        job = functools.partial(with_lease, deps, "imap-watcher", watch)
        task = asyncio.create_task(supervise(deps.duties, "imap-replies", job, interval_s=40))
        for _ in range(1000):  # generous deadline
            if deps.duties.get("imap-replies", "").startswith("idle"):
                break
            await asyncio.sleep(0.01)
        assert deps.duties["imap-replies"] == "idle: another OpsMedic holds the lease"
        assert not deps.duties.unhealthy() and not started.is_set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await deps.stop()
