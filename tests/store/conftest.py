"""The `store` fixture (tests/conftest.py) runs every contract test against SQLite and MongoDB.

`raw` gives backend-specific access that bypasses the Store API (to tamper with the audit
chain the way an attacker with database access would).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pymongo
import pytest

from mcp_server.store.base import Store
from mcp_server.store.mongo import MongoStore
from mcp_server.store.sqlite import SqliteStore


class Raw(Protocol):
    """Direct database access, bypassing the Store (and, for SQLite, the triggers)."""

    def edit(self, seq: int, field: str, value: Any) -> None: ...
    def delete(self, seq: int) -> None: ...
    def swap(self, a: int, b: int) -> None: ...
    def insert_garbage(self, seq: int) -> None: ...
    def try_update(self, seq: int) -> None: ...


class RawSqlite:
    _FIELDS = "ts, actor, transport, tool, args, target, decision, outcome, duration_ms, "
    _FIELDS += "incident_id, prev_hash, hash"

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def _untriggered(self, sql: str, *params: Any) -> None:
        with self._conn() as conn:
            conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
            conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
            conn.execute(sql, params)

    def edit(self, seq: int, field: str, value: Any) -> None:
        self._untriggered(f"UPDATE audit SET {field} = ? WHERE seq = ?", value, seq)

    def delete(self, seq: int) -> None:
        self._untriggered("DELETE FROM audit WHERE seq = ?", seq)

    def swap(self, a: int, b: int) -> None:
        with self._conn() as conn:
            sql = f"SELECT seq, {self._FIELDS} FROM audit WHERE seq IN (?, ?)"
            rows = {r[0]: r[1:] for r in conn.execute(sql, (a, b))}
        sets = ", ".join(f"{f.strip()} = ?" for f in self._FIELDS.split(","))
        for seq, other in ((a, b), (b, a)):
            self._untriggered(f"UPDATE audit SET {sets} WHERE seq = ?", *rows[other], seq)

    def insert_garbage(self, seq: int) -> None:
        with self._conn() as conn:  # INSERT is allowed: the triggers guard UPDATE and DELETE
            conn.execute(
                "INSERT INTO audit VALUES (?, 'yesterday', 'x', 'x', 'x', '{not json', "
                "NULL, NULL, 'ok', NULL, NULL, 'p', 'h', NULL, NULL)",
                (seq,),
            )

    def try_update(self, seq: int) -> None:
        with self._conn() as conn:
            conn.execute("UPDATE audit SET outcome = 'error' WHERE seq = ?", (seq,))


class RawMongo:
    def __init__(self, url: str) -> None:
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        self.audit = self.client.get_default_database().audit

    def edit(self, seq: int, field: str, value: Any) -> None:
        self.audit.update_one({"seq": seq}, {"$set": {field: value}})

    def delete(self, seq: int) -> None:
        self.audit.delete_one({"seq": seq})

    def swap(self, a: int, b: int) -> None:
        docs = {d["seq"]: d for d in self.audit.find({"seq": {"$in": [a, b]}})}
        for seq, other in ((a, b), (b, a)):
            content = {k: v for k, v in docs[other].items() if k not in ("_id", "seq")}
            self.audit.update_one({"seq": seq}, {"$set": content})

    def insert_garbage(self, seq: int) -> None:
        self.audit.insert_one({"_id": seq, "seq": seq, "ts": "yesterday", "args": "{not json"})

    def try_update(self, seq: int) -> None:
        raise sqlite3.IntegrityError("MongoDB has no triggers; the store never updates audit")


@pytest.fixture
def raw(store: Store) -> Iterator[Raw]:
    if isinstance(store, SqliteStore):
        yield RawSqlite(store.path)
    else:
        assert isinstance(store, MongoStore)
        access = RawMongo(store.url)
        yield access
        access.client.close()
