"""Blocking SQLite operations behind SqliteStore; each takes the connection and runs in its thread.

Every write that reads before it writes (audit chain, incident dedup) runs inside
BEGIN IMMEDIATE, which holds the file's write lock, so it is also correct across processes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel

from mcp_server.errors import Conflict, NotFound
from mcp_server.models import (
    AuditDraft,
    AuditEntry,
    Event,
    Heartbeat,
    Hold,
    Incident,
    IncidentStatus,
    Message,
    Severity,
    TimelineEntry,
    utcnow,
)
from mcp_server.safety.audit_keys import AuditKeys
from mcp_server.store import _rows as rows
from mcp_server.store._sqlite_schema import immediate
from mcp_server.store.base import (
    GENESIS_HASH,
    HEARTBEAT_KEEP_S,
    ChainVerifier,
    canonical_json,
)

logger = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
Conn = sqlite3.Connection

VERIFY_BATCH = 2000
KEEP = timedelta(seconds=HEARTBEAT_KEEP_S)
_INCIDENT_COLS = tuple(f for f in Incident.model_fields if f not in ("id", "timeline"))


@cache
def insert_sql(table: str, cols: tuple[str, ...], verb: str = "INSERT") -> str:
    names = ", ".join(f'"{c}"' for c in cols)
    return f"{verb} INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})"


def insert(conn: Conn, table: str, data: dict[str, Any], verb: str = "INSERT") -> sqlite3.Cursor:
    return conn.execute(insert_sql(table, tuple(data), verb), tuple(data.values()))


def put(conn: Conn, table: str, model: BaseModel, verb: str = "INSERT OR REPLACE") -> bool:
    """Insert (or replace / ignore, per verb) a model's row; True when a row was written."""
    return insert(conn, table, rows.to_fields(model, encode_json=True), verb).rowcount == 1


def get(conn: Conn, cls: type[M], table: str, key: str, value: Any) -> M | None:
    row = conn.execute(f'SELECT * FROM {table} WHERE "{key}" = ?', (value,)).fetchone()
    return None if row is None else rows.from_fields(cls, dict(row), decode_json=True)


def select(conn: Conn, cls: type[M], sql: str, params: Sequence[Any]) -> list[M]:
    return [rows.from_fields(cls, dict(r), decode_json=True) for r in conn.execute(sql, params)]


# --- audit -----------------------------------------------------------------------------------


def append_audit(conn: Conn, draft: AuditDraft, keys: AuditKeys | None = None) -> AuditEntry:
    with immediate(conn):
        tail = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (tail[0] + 1, tail[1]) if tail else (1, GENESIS_HASH)
        entry = rows.chain_entry(draft, seq, prev, keys)
        insert(conn, "audit", rows.audit_record(entry))
    return entry


def audit_rows(conn: Conn, sql: str, params: Sequence[Any]) -> list[AuditEntry]:
    return rows.parse_audit_records(conn.execute(sql, params))


def verify_batch(conn: Conn, verifier: ChainVerifier, after: int) -> int | None:
    """Feed the next batch; return the last seq read, or None when done or failed."""
    batch = conn.execute(
        "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", (after, VERIFY_BATCH)
    ).fetchall()
    return rows.feed_chain(verifier, batch, VERIFY_BATCH)


# --- incidents -------------------------------------------------------------------------------


def load_incidents(conn: Conn, found: list[sqlite3.Row]) -> list[Incident]:
    ids = [r["id"] for r in found]
    timelines: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    marks = ",".join("?" * len(ids))
    sql = (
        "SELECT incident_id, ts, actor, kind, text FROM incident_timeline "
        f"WHERE incident_id IN ({marks}) ORDER BY id"
    )
    for incident_id, *entry in conn.execute(sql, ids):
        timelines[incident_id].append(
            dict(zip(("ts", "actor", "kind", "text"), entry, strict=True))
        )
    return [
        rows.from_fields(Incident, {**dict(r), "timeline": timelines[r["id"]]}, decode_json=True)
        for r in found
    ]


def incident(conn: Conn, incident_id: int) -> Incident | None:
    found = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchall()
    return load_incidents(conn, found)[0] if found else None


def must_incident(conn: Conn, incident_id: int) -> Incident:
    found = incident(conn, incident_id)
    if found is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    return found


def add_timeline(conn: Conn, incident_id: int, entry: TimelineEntry) -> None:
    data = {"incident_id": incident_id, **rows.to_fields(entry, encode_json=True)}
    insert(conn, "incident_timeline", data)


def set_incident(conn: Conn, incident_id: int, changes: dict[str, Any]) -> None:
    sets = ", ".join(f'"{k}" = ?' for k in changes)
    conn.execute(f"UPDATE incidents SET {sets} WHERE id = ?", (*changes.values(), incident_id))


def open_incident(
    conn: Conn,
    target: str,
    symptom: str,
    title: str,
    severity: Severity,
    detail: dict[str, Any] | None,
    now: datetime,
    instance: str | None = None,
) -> tuple[Incident, bool]:
    with immediate(conn):
        row = conn.execute(
            "SELECT * FROM incidents WHERE target = ? AND symptom = ? AND status != 'resolved'",
            (target, symptom),
        ).fetchone()
        if row is None:
            inc = rows.new_incident(0, target, symptom, title, severity, detail, now, instance)
            data = rows.to_fields(inc, encode_json=True)
            new_id = insert(conn, "incidents", {k: data[k] for k in _INCIDENT_COLS}).lastrowid
            assert new_id is not None
            add_timeline(conn, new_id, inc.timeline[0])
            incident_id, created = new_id, True
        else:
            incident_id, created = bump_incident(conn, row, detail, now, instance), False
    return must_incident(conn, incident_id), created


def bump_incident(
    conn: Conn,
    row: sqlite3.Row,
    detail: dict[str, Any] | None,
    now: datetime,
    instance: str | None = None,
) -> int:
    """Count one more occurrence of an open incident and note it on its timeline."""
    count = row["count"] + 1
    stamp = rows.ts_text(now)
    merged = canonical_json({**json.loads(row["detail"]), **rows.plain(detail)})
    changes = {"count": count, "last_seen_at": stamp, "updated_at": stamp, "detail": merged}
    set_incident(conn, row["id"], changes)
    add_timeline(conn, row["id"], rows.repeat_entry(now, instance))
    return int(row["id"])


def update_incident(
    conn: Conn,
    incident_id: int,
    status: IncidentStatus | None,
    entry: TimelineEntry | None,
    detail: dict[str, Any] | None,
) -> Incident:
    now = entry.ts if entry is not None else utcnow()
    with immediate(conn):
        current = must_incident(conn, incident_id)
        changes = rows.status_changes(current.status, status, now)
        changes = {k: rows.ts_text(v) if isinstance(v, datetime) else v for k, v in changes.items()}
        if detail:
            changes["detail"] = canonical_json({**current.detail, **rows.plain(detail)})
        changes["updated_at"] = rows.ts_text(now)
        try:
            set_incident(conn, incident_id, changes)
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"incident {incident_id} cannot be reopened: a newer incident for "
                f"{current.target} {current.symptom} is open; update that one instead"
            ) from exc
        if entry is not None:
            add_timeline(conn, incident_id, entry)
    return must_incident(conn, incident_id)


# --- events, messages, leases ----------------------------------------------------------------


def add_events(conn: Conn, events: Sequence[Event]) -> list[Event]:
    inserted: list[Event] = []
    with immediate(conn):
        for event in events:
            data = rows.to_fields(event, encode_json=True)
            del data["seq"]
            cur = insert(conn, "events", data, "INSERT OR IGNORE")
            if cur.rowcount == 1:
                inserted.append(event.model_copy(update={"seq": cur.lastrowid}))
    return inserted


def update_message(conn: Conn, message: Message) -> None:
    data = rows.to_fields(message, encode_json=True)
    sets = ", ".join(f'"{k}" = ?' for k in data)
    cur = conn.execute(f"UPDATE messages SET {sets} WHERE id = ?", (*data.values(), message.id))
    if cur.rowcount == 0:
        raise NotFound(f"no message {message.id!r}; enqueue_message it first")


def put_heartbeat(conn: Conn, beat: Heartbeat) -> None:
    """Upsert this instance's row; forget instances silent for HEARTBEAT_KEEP."""
    with immediate(conn):
        put(conn, "heartbeats", beat)
        conn.execute("DELETE FROM heartbeats WHERE ts < ?", (rows.ts_text(beat.ts - KEEP),))


def acquire_lease(conn: Conn, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
    cur = conn.execute(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_at = excluded.expires_at "
        "WHERE leases.holder = excluded.holder OR leases.expires_at <= ?",
        (name, holder, rows.ts_text(now + timedelta(seconds=ttl_s)), rows.ts_text(now)),
    )
    return cur.rowcount == 1


# --- holds -----------------------------------------------------------------------------------


def purge_holds(conn: Conn, now: datetime) -> list[Hold]:
    """Delete expired holds in one transaction and return them (label holds are never stored)."""
    stamp = rows.ts_text(now)
    with immediate(conn):
        found = select(conn, Hold, "SELECT * FROM holds WHERE until <= ? ORDER BY target", (stamp,))
        conn.execute("DELETE FROM holds WHERE until <= ?", (stamp,))
    return found
