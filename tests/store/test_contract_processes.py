"""Store contract across OS processes sharing one SQLite file or one MongoDB database."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import pytest

from mcp_server.models import IncidentStatus
from mcp_server.store.base import Store
from tests.store._procs import Workers

pytestmark = pytest.mark.integration  # spawns OS processes


async def run_workers(tmp: Path, url: str, mode: str, count: int, concurrency: int) -> None:
    workers = Workers(tmp, url, mode, count, concurrency, n=2)
    try:
        await anyio.to_thread.run_sync(workers.release)
        await anyio.to_thread.run_sync(workers.finish)
    finally:
        workers.kill()


async def test_two_processes_append_one_valid_chain(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    await run_workers(tmp_path, store_url, "audit", count=150, concurrency=25)
    verdict = await store.verify_audit()
    assert verdict.ok, verdict
    assert verdict.checked == 300
    entries = await store.audit_entries()
    assert [e.seq for e in entries] == list(range(1, 301))
    assert {e.actor for e in entries} == {f"worker-{i}" for i in range(150)}
    assert len({e.transport for e in entries}) == 2  # transport carries the writer's pid


async def test_two_processes_race_one_incident(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    await run_workers(tmp_path, store_url, "incident", count=40, concurrency=8)
    incidents = await store.list_incidents()
    assert len(incidents) == 1, [(i.id, i.count) for i in incidents]
    (incident,) = incidents
    assert incident.count == 80 and incident.status == IncidentStatus.open
    kinds = [e.kind for e in incident.timeline]
    assert kinds[0] == "opened" and kinds.count("repeat") == 79 and len(kinds) == 80
