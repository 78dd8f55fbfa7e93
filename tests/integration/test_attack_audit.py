"""Issue 12, attack 5: rewrite the audit chain behind a real server's back (edit an entry and
re-hash the rest, delete the newest entries, INSERT OR REPLACE) and `opsmedic audit verify`
must exit 1 naming what is wrong. Also: an unkeyed chain from before keys migrates."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from mcp_server.models import AuditDraft
from mcp_server.store.base import canonical_json
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import http_server
from tests.integration.test_cli import run


def _calls(base: str, n: int) -> None:
    async def go() -> None:
        async with Client(StreamableHttpTransport(base + "/mcp")) as c:
            for i in range(n):
                await c.call_tool("write_audit_entry", {"event": "decided", "detail": f"d{i}"})

    asyncio.run(go())


def _unprotected(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, isolation_level=None)
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        con.execute(f"DROP TRIGGER {name}")
    return con


def _rehash_from(con: sqlite3.Connection, seq: int) -> None:
    """What an attacker without the key can do: recompute plain sha256 hashes onward."""
    con.row_factory = sqlite3.Row
    prev = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq - 1,)).fetchone()[0]
    for row in con.execute("SELECT * FROM audit WHERE seq >= ? ORDER BY seq", (seq,)).fetchall():
        keep = [k for k in row.keys() if k not in ("hash", "prev_hash", "key_id")]  # noqa: SIM118
        body = {k: row[k] for k in keep}
        body["args"] = json.loads(body["args"])
        digest = hashlib.sha256((prev + canonical_json(body)).encode()).hexdigest()
        con.execute(
            "UPDATE audit SET prev_hash = ?, hash = ?, key_id = NULL WHERE seq = ?",
            (prev, digest, row["seq"]),
        )
        prev = digest


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A data dir whose chain a real server wrote (and anchored on shutdown)."""
    with http_server(tmp_path) as (base, _proc):
        _calls(base, 12)
    ok = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    return tmp_path


def test_rewritten_and_rehashed_chain_is_detected(served: Path) -> None:
    con = _unprotected(served / "opsmedic.db")
    con.execute("UPDATE audit SET outcome = 'ok', decision = 'allowed' WHERE seq = 5")
    _rehash_from(con, 5)
    con.close()
    bad = run("audit", "verify", OPSMEDIC_DATA_DIR=str(served))
    print("rehashed:", bad.stdout.strip())
    assert bad.returncode == 1 and "seq 5" in bad.stdout and "re-hashed" in bad.stdout


def test_truncated_chain_is_detected(served: Path) -> None:
    con = _unprotected(served / "opsmedic.db")
    last = con.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
    con.execute("DELETE FROM audit WHERE seq > ?", (last - 5,))
    con.close()
    bad = run("audit", "verify", OPSMEDIC_DATA_DIR=str(served))
    print("truncated:", bad.stdout.strip())
    assert bad.returncode == 1 and "truncated" in bad.stdout and f"seq {last}" in bad.stdout


def test_insert_or_replace_is_refused_by_the_schema(served: Path) -> None:
    con = sqlite3.connect(served / "opsmedic.db", isolation_level=None)
    row = con.execute("SELECT * FROM audit WHERE seq = 3").fetchone()
    forged = list(row)
    forged[8] = "allowed"
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute(f"INSERT OR REPLACE INTO audit VALUES ({','.join('?' * len(row))})", forged)
    gap = [*forged]
    gap[0] = 999
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute(f"INSERT INTO audit VALUES ({','.join('?' * len(row))})", gap)
    con.close()
    assert run("audit", "verify", OPSMEDIC_DATA_DIR=str(served)).returncode == 0


def test_unkeyed_chain_migrates_then_is_keyed(tmp_path: Path) -> None:
    async def old_chain() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'opsmedic.db'}")
        await store.open()  # no keys: entries as written before this change
        for i in range(4):
            await store.append_audit(
                AuditDraft(actor="t", transport="cli", tool=f"t{i}", outcome="ok")
            )
        await store.close()

    asyncio.run(old_chain())
    with http_server(tmp_path) as (base, _proc):
        _calls(base, 3)
    ok = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path))
    assert ok.returncode == 0, ok.stdout
    con = sqlite3.connect(tmp_path / "opsmedic.db")
    keys = [k for (k,) in con.execute("SELECT key_id FROM audit ORDER BY seq")]
    con.close()
    assert keys[:4] == [None] * 4 and all(keys[4:]) and len(keys) >= 7
    anchor = json.loads((tmp_path.parent / f"{tmp_path.name}.audit-head.json").read_text())
    assert anchor["keyed_from"] == 5 and anchor["seq"] == len(keys)
    # rewriting the keyed part as unkeyed is caught by the anchor's keyed_from
    con = _unprotected(tmp_path / "opsmedic.db")
    _rehash_from(con, 5)
    con.close()
    bad = run("audit", "verify", OPSMEDIC_DATA_DIR=str(tmp_path))
    assert bad.returncode == 1 and "seq 5" in bad.stdout
