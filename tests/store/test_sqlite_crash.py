"""SQLite durability: a writer killed with SIGKILL mid-burst, and schema migrations."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import anyio.to_thread
import pytest

from mcp_server.models import AuditDraft, Job
from mcp_server.store._sqlite_schema import LATEST_VERSION, MIGRATIONS, migrate, schema_version
from mcp_server.store.sqlite import SqliteStore
from tests.store._procs import Workers, wait_until

pytestmark = pytest.mark.integration


def audit_rows(path: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def versions(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


async def test_kill_9_mid_burst_leaves_a_valid_chain(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    total = 1000 * 30  # 1000 concurrent writers; far more than get written before the kill
    workers = Workers(tmp_path, url, "audit", count=total, concurrency=1000, n=1)
    try:
        await anyio.to_thread.run_sync(workers.release)
        await anyio.to_thread.run_sync(
            wait_until, lambda: audit_rows(path) >= 300, 120, "300 audit rows"
        )
        workers.procs[0].kill()  # SIGKILL: no cleanup, no final commit
        await anyio.to_thread.run_sync(workers.procs[0].wait)
    finally:
        workers.kill()
    assert workers.procs[0].returncode == -9

    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SqliteStore(url)
    await store.open()
    try:
        verdict = await store.verify_audit()
        assert verdict.ok, verdict
        assert 300 <= verdict.checked < total
        after = await store.append_audit(
            AuditDraft(actor="after", transport="t", tool="t", outcome="ok")
        )
        assert after.seq == verdict.checked + 1 and (await store.verify_audit()).ok
    finally:
        await store.close()


async def test_open_twice_keeps_the_schema_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/m.db"
    for _ in range(2):
        store = SqliteStore(url)
        await store.open()
        await store.upsert_job(Job(id="j"))
        await store.close()
    assert versions(tmp_path / "nested/dir/m.db") == [v for v, _ in MIGRATIONS]
    with closing(sqlite3.connect(tmp_path / "nested/dir/m.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema_version(conn) == LATEST_VERSION
        assert migrate(conn) == []  # nothing left to apply


async def test_older_database_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == [1]
        conn.execute(
            "INSERT INTO jobs VALUES ('legacy', 'bot', 'ok', NULL, NULL, NULL, "
            "'2025-01-01T00:00:00.000000Z', '{}')"
        )
    assert versions(path) == [1]

    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        job = await store.get_job("legacy")
        assert job is not None and job.bot == "bot"
    finally:
        await store.close()
    assert versions(path) == [v for v, _ in MIGRATIONS]
    with closing(sqlite3.connect(path)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"runs_subject", "messages_due"} <= names


async def test_processes_opening_a_new_file_together_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    workers = Workers(tmp_path, f"sqlite:///{path}", "audit", count=20, concurrency=4, n=3)
    try:
        await anyio.to_thread.run_sync(workers.release)
        await anyio.to_thread.run_sync(workers.finish)
    finally:
        workers.kill()
    assert versions(path) == [v for v, _ in MIGRATIONS]
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        verdict = await store.verify_audit()
        assert verdict.ok and verdict.checked == 60
    finally:
        await store.close()
