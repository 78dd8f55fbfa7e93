"""Store contract for maintenance holds, against SQLite and MongoDB (see conftest.store)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from mcp_server.models import Hold
from mcp_server.store._sqlite_schema import LATEST_VERSION, MIGRATIONS, migrate, schema_version
from mcp_server.store.base import Store, open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def hold(
    target: str,
    minutes: float,
    reason: str = "db migration",
    actor: str = "alice",
    source: Literal["tool", "cli"] = "tool",
) -> Hold:
    until = T0 + timedelta(minutes=minutes)
    return Hold(
        target=target, reason=reason, actor=actor, created_at=T0, until=until, source=source
    )


async def test_put_list_round_trip_ordered_by_target(store: Store) -> None:
    await store.put_hold(hold("container:web", 30))
    await store.put_hold(hold("container:api", 5, source="cli", actor="cli:bob"))
    found = await store.list_holds()
    assert [h.target for h in found] == ["container:api", "container:web"]
    assert found[1] == hold("container:web", 30)  # microseconds and UTC survive
    assert found[0].source == "cli" and found[0].actor == "cli:bob"


async def test_put_replaces_the_targets_hold(store: Store) -> None:
    await store.put_hold(hold("container:web", 30))
    await store.put_hold(hold("container:web", 90, reason="longer"))
    (only,) = await store.list_holds()
    assert only.reason == "longer" and only.until == T0 + timedelta(minutes=90)


async def test_delete_says_whether_there_was_one(store: Store) -> None:
    await store.put_hold(hold("process:worker", 30))
    assert await store.delete_hold("process:worker") is True
    assert await store.delete_hold("process:worker") is False
    assert await store.list_holds() == []


async def test_purge_removes_only_expired_holds_and_returns_them(store: Store) -> None:
    await store.put_hold(hold("container:a", 1))
    await store.put_hold(hold("container:b", 10))
    await store.put_hold(hold("container:c", 2))
    gone = await store.purge_holds(T0 + timedelta(minutes=2))  # until == now counts as expired
    assert [h.target for h in gone] == ["container:a", "container:c"]
    assert [h.target for h in await store.list_holds()] == ["container:b"]
    assert await store.purge_holds(T0 + timedelta(minutes=2)) == []


async def test_holds_are_shared_by_two_store_instances(store: Store, store_url: str) -> None:
    other = open_store(store_url)
    await other.open()
    try:
        await other.put_hold(hold("job:invoice-bot", 30))
        assert [h.target for h in await store.list_holds()] == ["job:invoice-bot"]
        assert await store.delete_hold("job:invoice-bot")
        assert await other.list_holds() == []
    finally:
        await other.close()


def test_sqlite_file_of_version_2_gains_the_holds_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    try:
        migrate(conn, [m for m in MIGRATIONS if m[0] <= 2])
        assert schema_version(conn) == 2
        assert migrate(conn) == [3, 4] and schema_version(conn) == LATEST_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "holds" in tables
    finally:
        conn.close()
