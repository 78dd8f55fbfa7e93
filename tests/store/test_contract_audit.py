"""Store contract, audit chain: append/read/recent/verify, round trips and tamper detection."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone

import anyio
import pytest

from mcp_server.models import AuditDraft, AuditEntry
from mcp_server.store.base import GENESIS_HASH, Store, audit_body, audit_hash, open_store
from mcp_server.store.sqlite import SqliteStore
from tests.store.conftest import Raw

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def draft(n: int, **kw: object) -> AuditDraft:
    base = {"ts": T0 + timedelta(seconds=n), "actor": "tester", "transport": "stdio"}
    return AuditDraft.model_validate(
        {**base, "tool": "restart", "outcome": "ok", "args": {"n": n}, **kw}
    )


async def fill(store: Store, count: int) -> list[AuditEntry]:
    return [await store.append_audit(draft(n)) for n in range(1, count + 1)]


async def test_append_links_the_chain(store: Store) -> None:
    entries = await fill(store, 3)
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS_HASH
    for prev, entry in zip([None, *entries], entries, strict=False):
        if prev is not None:
            assert entry.prev_hash == prev.hash
        assert entry.hash == audit_hash(entry.prev_hash, audit_body(entry))
    verdict = await store.verify_audit()
    assert verdict.ok and verdict.checked == 3 and verdict.bad_seq is None


async def test_read_entries_and_recent(store: Store) -> None:
    entries = await fill(store, 5)
    assert await store.audit_entries() == entries
    assert await store.audit_entries(after_seq=2) == entries[2:]
    assert await store.audit_entries(after_seq=1, limit=2) == entries[1:3]
    assert await store.audit_entries(after_seq=5) == []
    assert await store.recent_audit(limit=2) == [entries[4], entries[3]]
    assert await store.recent_audit() == entries[::-1]


async def test_empty_chain_verifies(store: Store) -> None:
    verdict = await store.verify_audit()
    assert verdict.ok and verdict.checked == 0
    assert await store.recent_audit() == []


TRICKY: list[dict[str, object]] = [
    {"ts": datetime(2026, 5, 6, 7, 8, 9, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30)))},
    {"ts": datetime(2026, 5, 6, 7, 8, 9)},  # naive: taken as UTC
    {"ts": datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)},  # no microseconds
    {"duration_ms": 0.1 + 0.2},
    {"duration_ms": 1e-300},
    {"duration_ms": 5},  # int in a float field
    {"duration_ms": float("nan")},
    {"duration_ms": float("inf")},
    {"args": {"f": [0.1, -0.0, 1e308, 2**70, -(2**63)], "nan": float("nan"), "s": {3, 1}}},
    {"args": {"when": datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=-3))), "t": (1, "x")}},
    {"args": {"ünï": "çødé \u2028 \x00 \U0001f600", "nested": {"z": {"a": [None, True]}}}},
    {"args": {"a.b": 1, "$where": "x", "": "empty key"}},
    {"target": "container:web", "decision": "allowed", "incident_id": 42},
]


@pytest.mark.parametrize("extra", TRICKY, ids=[str(i) for i in range(len(TRICKY))])
async def test_hash_survives_the_round_trip(store: Store, store_url: str, extra: dict) -> None:
    await store.append_audit(draft(0))
    returned = await store.append_audit(draft(1, **extra))
    reread = (await store.audit_entries(after_seq=1))[0]
    assert reread == returned
    assert reread.hash == audit_hash(reread.prev_hash, audit_body(reread))
    assert reread.ts.utcoffset() == timedelta(0)
    assert (await store.verify_audit()).ok

    other = open_store(store_url)  # a fresh process-like reader
    await other.open()
    try:
        assert (await other.verify_audit()).ok
        assert (await other.recent_audit(1))[0] == returned
    finally:
        await other.close()


async def test_verify_streams_long_chains(store: Store) -> None:
    async with anyio.create_task_group() as tg:  # more than one verify batch
        for n in range(2100):
            tg.start_soon(store.append_audit, draft(n))
    verdict = await store.verify_audit()
    assert verdict.ok and verdict.checked == 2100


async def test_concurrent_appends_keep_the_chain(store: Store) -> None:
    results: list[AuditEntry] = []

    async def one(n: int) -> None:
        results.append(await store.append_audit(draft(n)))

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(one, n)
    assert sorted(e.seq for e in results) == list(range(1, 201))
    verdict = await store.verify_audit()
    assert verdict.ok and verdict.checked == 200


# --- tampering -------------------------------------------------------------------------------


async def test_edited_entry_is_named(store: Store, raw: Raw) -> None:
    await fill(store, 5)
    raw.edit(3, "outcome", "error")
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 3 and verdict.checked == 2
    assert "edited" in (verdict.reason or "")


async def test_edited_args_are_named(store: Store, raw: Raw) -> None:
    await fill(store, 5)
    raw.edit(4, "args", '{"n":40}')
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 4


async def test_rehashed_entry_breaks_the_next_link(store: Store, raw: Raw) -> None:
    entries = await fill(store, 5)
    body = audit_body(entries[2]) | {"outcome": "error"}
    raw.edit(3, "outcome", "error")
    raw.edit(3, "hash", audit_hash(entries[2].prev_hash, body))  # a careful forger
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 4 and "prev_hash" in (verdict.reason or "")


async def test_deleted_entry_is_named(store: Store, raw: Raw) -> None:
    await fill(store, 5)
    raw.delete(3)
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 3 and "missing" in (verdict.reason or "")


async def test_deleted_tail_entry_is_not_a_break(store: Store, raw: Raw) -> None:
    """Truncating the newest entries is invisible to the chain itself (documented limit)."""
    await fill(store, 5)
    raw.delete(5)
    verdict = await store.verify_audit()
    assert verdict.ok and verdict.checked == 4


async def test_swapped_entries_are_named(store: Store, raw: Raw) -> None:
    await fill(store, 5)
    raw.swap(2, 4)
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 2


async def test_unreadable_entry_is_named(store: Store, raw: Raw) -> None:
    await fill(store, 3)
    raw.insert_garbage(4)
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 4 and verdict.checked == 3
    assert "cannot be read" in (verdict.reason or "")


async def test_garbled_timestamp_is_named(store: Store, raw: Raw) -> None:
    await fill(store, 3)
    raw.edit(2, "ts", "not a time")
    verdict = await store.verify_audit()
    assert not verdict.ok and verdict.bad_seq == 2 and "cannot be read" in (verdict.reason or "")


async def test_sqlite_triggers_refuse_update_and_delete(store: Store, raw: Raw) -> None:
    if not isinstance(store, SqliteStore):
        pytest.skip("triggers are SQLite's guard; Mongo code never updates audit documents")
    await fill(store, 2)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.try_update(1)
    with closing(sqlite3.connect(store.path)) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("DELETE FROM audit WHERE seq = 1")
    assert (await store.verify_audit()).ok
