"""Client mode against a real `websockets` hub on 127.0.0.1, into SQLite and MongoDB (wire).

The hub sends thousands of events with malformed items, duplicates, garbage frames and two
abrupt disconnects in the middle; every valid event must be stored exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from mcp_server.backends.ingest.build import (
    HubClient,
    IngestBatch,
    build_hub_client,
    build_restarter,
)
from mcp_server.core.events import EventBus
from mcp_server.core.incidents import ACTIVE, Incidents
from mcp_server.core.jobs import JobTracker
from mcp_server.errors import Unavailable
from mcp_server.models import Event
from mcp_server.safety.audit import Auditor
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import IngestSettings
from mcp_server.store.base import Store
from tests.integration._ingest_support import Hub, make_stream, wait_until

TOKEN = "hub-token-0123456789"


@dataclass
class Pipeline:
    store: Store
    tracker: JobTracker


@pytest.fixture
async def pipeline(store: Store) -> AsyncIterator[Pipeline]:
    bus = EventBus(store)
    auditor = Auditor(store, Redactor([TOKEN]))
    tracker = JobTracker(store, bus, Incidents(store, bus), auditor=auditor)
    yield Pipeline(store, tracker)
    await tracker.close()


async def all_events(store: Store) -> list[Event]:
    found: list[Event] = []
    cursor = 0
    while batch := await store.events_after(cursor, 1000):
        found.extend(batch)
        cursor = batch[-1].seq or cursor
    return found


@contextlib.asynccontextmanager
async def running(client: HubClient) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(client.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def hub_settings(hub: Hub, **kw: Any) -> IngestSettings:
    fast = {"reconnect_min_s": 0.02, "reconnect_max_s": 0.2}
    return IngestSettings(url=hub.url, hub_token=TOKEN, resume=hub.resume, **fast, **kw)  # type: ignore[arg-type]


def hub_client(hub: Hub, pipeline: Pipeline) -> HubClient:
    tracker = pipeline.tracker
    client = build_hub_client(hub_settings(hub), tracker.handle, tracker.load_cursor)
    assert client is not None
    return client


@pytest.mark.parametrize("resume", ["query", "hello"])
async def test_thousands_of_events_with_drops_stored_exactly_once(
    pipeline: Pipeline, resume: str
) -> None:
    stream = make_stream(n_valid=5000)
    hub = Hub(stream, TOKEN, drops=[1500, 3500], resume=resume)
    async with hub.running():
        client = hub_client(hub, pipeline)
        async with running(client):

            async def all_stored() -> bool:
                return client.last_id == stream.last_id

            await wait_until(all_stored, 60, "the hub's last event stored")
            command_id = await client.send_command("job-3", reason="stalled in test")
            await wait_until(lambda: hub.commands, 10, "the restart command at the hub")

    await pipeline.tracker.close()
    assert hub.connections == 3 and not hub.drops  # both drops happened, then resumed
    assert hub.afters[0] is None and all(a is not None for a in hub.afters[1:])
    events = [e for e in await all_events(pipeline.store) if e.source == "ingest"]
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)) == len(stream.valid_ids)  # none lost, none twice
    assert set(ids) == set(stream.valid_ids)
    assert pipeline.tracker.rejected_total >= sum(1 for i in stream.items if _bad(i))
    assert hub.commands == [
        {
            "type": "command",
            "command": "restart",
            "job": "job-3",
            "reason": "stalled in test",
            "id": command_id,
        }
    ]

    runs = await pipeline.store.list_runs(limit=10_000)
    assert {r.id for r in runs} == stream.runs
    assert {r.id for r in runs if r.status == "failed"} == stream.failed_runs
    jobs = await pipeline.store.list_jobs()
    assert len(jobs) == 20 and all(j.status in ("ok", "failed", "running") for j in jobs)
    audit = await pipeline.store.recent_audit(200)
    assert any(a.tool == "ingest" and a.outcome == "rejected" for a in audit)


def _bad(item: Any) -> bool:
    return not isinstance(item, dict) or item.get("id") in (None, "bad-type", "bad-ts", "no-line")


async def test_failed_runs_open_incidents_and_later_success_resolves(pipeline: Pipeline) -> None:
    # 4 jobs x 24 runs of 10 events; runs 3, 7, ..., 23 of each job fail, the others succeed
    stream = make_stream(n_valid=960, jobs=4, run_len=10)
    hub = Hub(stream, TOKEN)
    async with hub.running():
        client = hub_client(hub, pipeline)
        async with running(client):
            await wait_until(lambda: client.last_id == stream.last_id, 30, "all stored")
    await pipeline.tracker.close()
    incidents = await pipeline.store.list_incidents(limit=100)
    for j in range(4):
        mine = sorted(
            (i for i in incidents if i.target == f"job:job-{j}" and i.symptom == "run_failed"),
            key=lambda i: i.id,
        )
        assert len(mine) == 6  # each failure after a success opens a new incident
        assert [i.status in ACTIVE for i in mine] == [False] * 5 + [True]  # the last run failed
        assert all(i.count == 1 for i in mine)
        assert "succeeded" in mine[0].timeline[-1].text


async def test_wrong_token_is_refused_and_retried_with_backoff(pipeline: Pipeline) -> None:
    hub = Hub(make_stream(n_valid=10), "another-token-999")
    async with hub.running():
        client = hub_client(hub, pipeline)
        async with running(client):
            await wait_until(lambda: hub.refused >= 3, 10, "three refused attempts")
            assert not client.connected
            with pytest.raises(Unavailable, match="not connected"):
                await client.send_command("job-1", reason="x")
    assert hub.connections == 0
    assert await pipeline.store.events_after(0, 10) == []


async def test_restart_goes_over_the_hub_socket_when_no_webhook(pipeline: Pipeline) -> None:
    hub = Hub(make_stream(n_valid=5), TOKEN)
    async with hub.running():
        client = hub_client(hub, pipeline)
        restarter = build_restarter(IngestSettings(url=hub.url), client)
        assert restarter is client
        async with running(client):
            assert await client.wait_connected(10)
            await restarter.restart("job-0", "restart by policy")
            await wait_until(lambda: hub.commands, 10, "command at the hub")
    assert hub.commands[0]["job"] == "job-0" and hub.commands[0]["command"] == "restart"


async def test_resume_point_survives_an_opsmedic_restart(pipeline: Pipeline) -> None:
    stream = make_stream(n_valid=300)
    hub = Hub(stream, TOKEN, replay=0)
    async with hub.running():
        client = hub_client(hub, pipeline)
        async with running(client):
            await wait_until(lambda: client.last_id == stream.last_id, 30, "all stored")
        # a new process: fresh tracker and client on the same store
        bus = EventBus(pipeline.store)
        tracker = JobTracker(pipeline.store, bus, Incidents(pipeline.store, bus))
        again = build_hub_client(hub_settings(hub), tracker.handle, tracker.load_cursor)
        assert again is not None and tracker.cursor(again.source) is None
        async with running(again):
            await wait_until(lambda: len(hub.afters) == 2, 10, "second connection")
    assert hub.afters[-1] == stream.last_id


async def test_a_batch_that_fails_to_store_is_fetched_again(pipeline: Pipeline) -> None:
    stream = make_stream(n_valid=2000)
    hub = Hub(stream, TOKEN, replay=0)
    calls = 0

    async def flaky(batch: IngestBatch) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Unavailable("store went away (injected)")
        return await pipeline.tracker.handle(batch)

    async with hub.running():
        settings = hub_settings(hub)
        client = build_hub_client(settings, flaky, pipeline.tracker.load_cursor)
        assert client is not None
        async with running(client):
            await wait_until(lambda: client.last_id == stream.last_id, 30, "all stored")
    assert hub.connections == 2  # the failed batch ended the session; resumed after it
    ids = [e.id for e in await all_events(pipeline.store) if e.source == "ingest"]
    assert len(ids) == len(set(ids)) == len(stream.valid_ids)
