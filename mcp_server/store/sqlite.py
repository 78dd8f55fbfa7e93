"""SQLite Store: the zero-set-up default. One file, WAL, safe for several processes.

Blocking sqlite3 calls run in a worker thread, one at a time per store (one connection).
The schema is versioned (see _sqlite_schema.MIGRATIONS) and migrated on open().
The audit table is append-only: triggers abort any UPDATE or DELETE of its rows.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from mcp_server.errors import ConfigError, Conflict, OpsMedicError, Unavailable
from mcp_server.models import (
    Approval,
    AuditDraft,
    AuditEntry,
    Event,
    Heartbeat,
    Hold,
    Incident,
    IncidentStatus,
    Job,
    Message,
    Rca,
    Run,
    TimelineEntry,
)
from mcp_server.store import _rows as rows
from mcp_server.store import _sqlite_ops as ops
from mcp_server.store._sqlite_schema import harden_audit, migrate
from mcp_server.store.base import OpsDelegate

logger = logging.getLogger(__name__)
T = TypeVar("T")
MIN_FREE_BYTES = 256 * 1024  # below this the heartbeat write counts as failed
Conn = sqlite3.Connection


def sqlite_path(url: str) -> Path:
    """`sqlite:///abs/x.db` and `sqlite:////abs/x.db` -> /abs/x.db; `sqlite:rel.db` -> rel.db."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("//"):
        rest = "/" + rest.lstrip("/")
    if rest in ("", "/") or ":memory:" in rest:
        raise ConfigError(f"OPSMEDIC_STORE_URL={url!r} names no file; use sqlite:///abs/path.db")
    return Path(rest)


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """Translate sqlite3 exceptions once, at the edge of this backend."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"SQLite store {path}: {exc}; re-read the record and retry") from exc
    except sqlite3.OperationalError as exc:
        raise Unavailable(
            f"SQLite store {path} failed ({exc}); if it is locked, another process held it "
            "too long; check disk space and file permissions, then retry"
        ) from exc
    except sqlite3.Error as exc:
        raise Unavailable(f"SQLite store {path} failed: {exc}") from exc


class SqliteStore(OpsDelegate):
    """Store on one SQLite file (WAL). Several processes may share the file.

    Queries say `LIMIT max(?, 0)` because SQLite reads a negative LIMIT as "no limit".
    """

    _ops = ops

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout_s = busy_timeout_s
        self._conn: Conn | None = None
        self._limiter = anyio.CapacityLimiter(1)  # one connection, used by one thread at a time
        self._conn_lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------------

    def _connect(self) -> Conn:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(f"cannot create {self.path.parent} for the store: {exc}") from exc
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            applied = migrate(conn)
            harden_audit(conn)
        except BaseException:
            conn.close()
            raise
        if applied:
            logger.info("store %s migrated to schema version %s", self.path, applied[-1])
        return conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise Unavailable(f"SQLite store {self.path} is not open; call open() first")
        call = partial(self._call, fn, self._conn, *args)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def _call(self, fn: Callable[..., T], conn: Conn, *args: Any) -> T:
        # The thread lock is the last word on "one user of the connection at a time": it also
        # holds when a call outlives its event loop (a cancelled test, a shutdown) and close()
        # runs meanwhile. sqlite3 crashes the process if a connection is closed mid-call.
        with self._conn_lock, _sqlite_errors(self.path):
            if self._conn is not conn:
                raise Unavailable(f"SQLite store {self.path} was closed; open() it again")
            return fn(conn, *args)

    async def open(self) -> None:
        if self._conn is not None:
            return
        with _sqlite_errors(self.path):
            self._conn = await anyio.to_thread.run_sync(self._connect, limiter=self._limiter)

    async def close(self) -> None:
        conn = self._conn
        if conn is not None:
            await anyio.to_thread.run_sync(self._close, conn, limiter=self._limiter)

    def _close(self, conn: Conn) -> None:
        with self._conn_lock:
            self._conn = None
            conn.close()

    async def ping(self) -> bool:
        try:
            return await self._run(lambda c: c.execute("SELECT 1").fetchone()[0] == 1)
        except OpsMedicError:
            return False

    # --- audit -----------------------------------------------------------------------------

    async def append_audit(self, draft: AuditDraft) -> AuditEntry:
        return await self._run(ops.append_audit, draft, self.audit_keys)

    async def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT max(?, 0)"
        return await self._run(ops.audit_rows, sql, (after_seq, 2**62 if limit is None else limit))

    async def recent_audit(self, limit: int = 50) -> list[AuditEntry]:
        sql = "SELECT * FROM audit ORDER BY seq DESC LIMIT max(?, 0)"
        return await self._run(ops.audit_rows, sql, (limit,))

    # --- incidents -------------------------------------------------------------------------

    async def get_incident(self, incident_id: int) -> Incident | None:
        return await self._run(ops.incident, incident_id)

    async def list_incidents(
        self, status: Sequence[IncidentStatus] | None = None, limit: int = 50
    ) -> list[Incident]:
        where, params = "", [str(s) for s in status or ()]
        if status is not None:
            where = f"WHERE status IN ({','.join('?' * len(params))})"
        sql = f"SELECT * FROM incidents {where} ORDER BY updated_at DESC, id DESC LIMIT max(?, 0)"

        def load(conn: Conn) -> list[Incident]:
            return ops.load_incidents(conn, conn.execute(sql, (*params, limit)).fetchall())

        return await self._run(load)

    async def update_incident(
        self,
        incident_id: int,
        status: IncidentStatus | None = None,
        entry: TimelineEntry | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Incident:
        return await self._run(ops.update_incident, incident_id, status, entry, detail)

    # --- rca, jobs, runs -------------------------------------------------------------------

    async def put_rca(self, rca: Rca) -> None:
        await self._run(ops.put, "rca", rca)

    async def get_rca(self, incident_id: int) -> Rca | None:
        return await self._run(ops.get, Rca, "rca", "incident_id", incident_id)

    async def upsert_job(self, job: Job) -> None:
        await self._run(ops.put, "jobs", job)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._run(ops.get, Job, "jobs", "id", job_id)

    async def list_jobs(self, limit: int = 200) -> list[Job]:
        """Ordered by id."""
        return await self._run(
            ops.select, Job, "SELECT * FROM jobs ORDER BY id LIMIT max(?, 0)", (limit,)
        )

    async def put_run(self, run: Run) -> None:
        await self._run(ops.put, "runs", run)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._run(ops.get, Run, "runs", "id", run_id)

    async def list_runs(self, subject: str | None = None, limit: int = 50) -> list[Run]:
        where = "" if subject is None else "WHERE subject = ?"
        params = ([] if subject is None else [subject]) + [limit]
        sql = f"SELECT * FROM runs {where} ORDER BY started_at DESC, id DESC LIMIT max(?, 0)"
        return await self._run(ops.select, Run, sql, params)

    async def list_actions(
        self, since: datetime, subject: str | None = None, limit: int = 1000
    ) -> list[Run]:
        where = "kind = 'action' AND started_at >= ?" + (
            "" if subject is None else " AND subject = ?"
        )
        params: list[Any] = [rows.ts_text(since)] + ([] if subject is None else [subject])
        sql = f"SELECT * FROM runs WHERE {where} ORDER BY started_at, id LIMIT max(?, 0)"
        return await self._run(ops.select, Run, sql, [*params, limit])

    # --- events ----------------------------------------------------------------------------

    async def add_events(self, events: Sequence[Event]) -> list[Event]:
        """INSERT OR IGNORE by id in one transaction; the inserted ones come back with seq."""
        return await self._run(ops.add_events, events) if events else []

    async def events_after(self, cursor: int = 0, limit: int = 100) -> list[Event]:
        sql = "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT max(?, 0)"
        return await self._run(ops.select, Event, sql, (cursor, limit))

    async def last_event_seq(self) -> int:
        row = await self._run(lambda c: c.execute("SELECT MAX(seq) FROM events").fetchone())
        return int(row[0] or 0)

    # --- approvals -------------------------------------------------------------------------

    async def put_approval(self, approval: Approval) -> None:
        await self._run(ops.put, "approvals", approval)

    async def get_approval(self, approval_id: str) -> Approval | None:
        return await self._run(ops.get, Approval, "approvals", "id", approval_id)

    async def decide_approval(
        self, approval_id: str, status: str, now: datetime, via: str | None = None
    ) -> bool:
        rows.check_approval_status(status)
        sql = (
            "UPDATE approvals SET status = ?, decided_at = ?, via = COALESCE(?, via) "
            "WHERE id = ? AND status = 'pending'"
        )
        params = (status, rows.ts_text(now), via, approval_id)
        return await self._run(lambda c: c.execute(sql, params).rowcount == 1)

    # --- messages --------------------------------------------------------------------------

    async def enqueue_message(self, message: Message) -> bool:
        return await self._run(ops.put, "messages", message, "INSERT OR IGNORE")

    async def due_messages(
        self, now: datetime, limit: int = 20, direction: str = "out"
    ) -> list[Message]:
        # the direction is written into the SQL so the partial index messages_due (for
        # 'out') is used: SQLite cannot match a partial index against a bound parameter
        if direction not in ("out", "hook"):
            raise ValueError(f"due_messages: direction must be 'out' or 'hook', not {direction!r}")
        sql = (
            f"SELECT * FROM messages WHERE direction = '{direction}' AND status = 'queued' "
            "AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at, id LIMIT max(?, 0)"
        )
        return await self._run(ops.select, Message, sql, (rows.ts_text(now), limit))

    async def update_message(self, message: Message) -> None:
        await self._run(ops.update_message, message)

    async def get_message(self, message_id: str) -> Message | None:
        return await self._run(ops.get, Message, "messages", "id", message_id)

    async def list_messages(
        self, incident_id: int | None = None, direction: str | None = None, limit: int = 100
    ) -> list[Message]:
        """Newest first (by created_at)."""
        filters = {"incident_id": incident_id, "direction": direction}
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = ?" for k in used)
        sql = (
            f"SELECT * FROM messages {'WHERE ' + where if where else ''} "
            "ORDER BY created_at DESC, id DESC LIMIT max(?, 0)"
        )
        return await self._run(ops.select, Message, sql, (*used.values(), limit))

    # --- leases ----------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: datetime) -> bool:
        return await self._run(ops.acquire_lease, name, holder, ttl_s, now)

    async def release_lease(self, name: str, holder: str) -> None:
        sql = "DELETE FROM leases WHERE name = ? AND holder = ?"
        await self._run(lambda c: c.execute(sql, (name, holder)))

    # --- holds -----------------------------------------------------------------------------

    async def put_hold(self, hold: Hold) -> None:
        await self._run(ops.put, "holds", hold)

    async def delete_hold(self, target: str) -> bool:
        sql = "DELETE FROM holds WHERE target = ?"
        return await self._run(lambda c: c.execute(sql, (target,)).rowcount == 1)

    async def list_holds(self) -> list[Hold]:
        return await self._run(ops.select, Hold, "SELECT * FROM holds ORDER BY target", ())

    async def purge_holds(self, now: datetime) -> list[Hold]:
        return await self._run(ops.purge_holds, now)

    # --- heartbeats ------------------------------------------------------------------------

    async def put_heartbeat(self, beat: Heartbeat) -> None:
        """The upsert, then the disk's free space: after a checkpoint SQLite rewrites its WAL
        in place, so a small write can still pass on a full disk the next growth fails on."""
        await self._run(ops.put_heartbeat, beat)
        try:
            free = (await anyio.to_thread.run_sync(shutil.disk_usage, self.path.parent)).free
        except OSError as exc:
            raise Unavailable(f"SQLite store {self.path}: cannot read its disk: {exc}") from exc
        if free < MIN_FREE_BYTES:
            raise Unavailable(
                f"SQLite store {self.path}: its disk is full ({free // 1024} KiB free); "
                "writes fail as soon as the file grows; free some space"
            )

    async def list_heartbeats(self, since: datetime) -> list[Heartbeat]:
        sql = "SELECT * FROM heartbeats WHERE ts >= ? ORDER BY ts DESC, holder"
        return await self._run(ops.select, Heartbeat, sql, [rows.ts_text(since)])
