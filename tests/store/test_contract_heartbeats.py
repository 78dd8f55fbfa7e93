"""Store contract for heartbeats: the write probe behind /healthz and the live instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mcp_server.errors import Unavailable
from mcp_server.models import Heartbeat
from mcp_server.store.base import HEARTBEAT_KEEP_S, Store, open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def beat(holder: str, seconds: float, **extra: object) -> Heartbeat:
    return Heartbeat(holder=holder, ts=at(seconds), version="1", mode="heal", **extra)


async def test_heartbeats_upsert_by_holder_newest_first(store: Store) -> None:
    duty = {"state": "running", "detail": "", "interval_s": 5.0, "healthy": True,
            "last_progress_age_s": 1.5}  # fmt: skip
    await store.put_heartbeat(beat("a", 0))
    await store.put_heartbeat(beat("b", 5))
    await store.put_heartbeat(beat("a", 10, healthy=False, duties={"docker-events": duty}))
    found = await store.list_heartbeats(at(0))
    assert [(b.holder, b.ts) for b in found] == [("a", at(10)), ("b", at(5))]
    assert found[0].duties == {"docker-events": duty} and found[0].healthy is False
    assert [b.holder for b in await store.list_heartbeats(at(6))] == ["a"]


async def test_heartbeats_silent_for_a_day_are_forgotten(store: Store) -> None:
    await store.put_heartbeat(beat("gone", 0))
    await store.put_heartbeat(beat("live", HEARTBEAT_KEEP_S + 60))
    assert [b.holder for b in await store.list_heartbeats(at(-1))] == ["live"]


async def test_a_heartbeat_on_a_closed_store_raises_unavailable(store_url: str) -> None:
    closed = open_store(store_url)
    with pytest.raises(Unavailable):
        await closed.put_heartbeat(beat("a", 0))
