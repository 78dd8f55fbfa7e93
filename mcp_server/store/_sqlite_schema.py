"""SQLite schema as an ordered list of migrations, applied once each inside one transaction.

Add a migration by appending ``(next_version, (statement, ...))``; never edit a released one.
Statements run one by one (not executescript, which would commit half-way).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

Migration = tuple[int, tuple[str, ...]]

_V1: tuple[str, ...] = (
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, transport TEXT NOT NULL,
        tool TEXT NOT NULL, args TEXT NOT NULL, target TEXT, decision TEXT, outcome TEXT NOT NULL,
        duration_ms REAL, incident_id INTEGER, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only: entries cannot be changed'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only: entries cannot be deleted'); END""",
    """CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, symptom TEXT NOT NULL,
        title TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL,
        count INTEGER NOT NULL, opened_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        last_seen_at TEXT NOT NULL, resolved_at TEXT, detail TEXT NOT NULL DEFAULT '{}')""",
    # At most one not-yet-resolved incident per target+symptom ('resolved' = CLOSED_STATUSES).
    """CREATE UNIQUE INDEX incidents_open ON incidents (target, symptom)
        WHERE status != 'resolved'""",
    "CREATE INDEX incidents_updated ON incidents (updated_at)",
    """CREATE TABLE incident_timeline (
        id INTEGER PRIMARY KEY, incident_id INTEGER NOT NULL REFERENCES incidents (id),
        ts TEXT NOT NULL, actor TEXT NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL)""",
    "CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id)",
    """CREATE TABLE rca (
        incident_id INTEGER PRIMARY KEY, summary TEXT NOT NULL, category TEXT NOT NULL,
        evidence TEXT NOT NULL, recommendation TEXT NOT NULL, restart_safe INTEGER NOT NULL,
        confidence REAL NOT NULL, author TEXT NOT NULL, created_at TEXT NOT NULL)""",
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, bot TEXT NOT NULL, status TEXT NOT NULL, last_heartbeat TEXT,
        last_run_id TEXT, timeout_s REAL, updated_at TEXT NOT NULL, meta TEXT NOT NULL)""",
    """CREATE TABLE runs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL,
        started_at TEXT NOT NULL, finished_at TEXT, error TEXT, verdict TEXT,
        log TEXT NOT NULL, detail TEXT NOT NULL)""",
    "CREATE INDEX runs_started ON runs (started_at)",
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, ts TEXT NOT NULL,
        source TEXT NOT NULL, type TEXT NOT NULL, target TEXT, incident_id INTEGER,
        data TEXT NOT NULL)""",
    """CREATE TABLE approvals (
        id TEXT PRIMARY KEY, incident_id INTEGER, action_hash TEXT NOT NULL,
        action TEXT NOT NULL, approver TEXT NOT NULL, expires_at TEXT NOT NULL,
        status TEXT NOT NULL, created_at TEXT NOT NULL, decided_at TEXT, via TEXT)""",
    """CREATE TABLE messages (
        id TEXT PRIMARY KEY, direction TEXT NOT NULL, incident_id INTEGER, "to" TEXT NOT NULL,
        subject TEXT NOT NULL, body_text TEXT NOT NULL, body_html TEXT, headers TEXT NOT NULL,
        status TEXT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at TEXT NOT NULL,
        last_error TEXT, created_at TEXT NOT NULL, sent_at TEXT)""",
    """CREATE TABLE leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TEXT NOT NULL)""",
)

_V2: tuple[str, ...] = (
    "CREATE INDEX runs_subject ON runs (subject, started_at)",
    "CREATE INDEX messages_due ON messages (status, next_attempt_at) WHERE direction = 'out'",
    "CREATE INDEX messages_incident ON messages (incident_id, created_at)",
    "CREATE INDEX incidents_status ON incidents (status, updated_at)",
)

_V3: tuple[str, ...] = (
    # One hold per target; until is NULL only for label holds, which are never stored.
    """CREATE TABLE holds (
        target TEXT PRIMARY KEY, reason TEXT NOT NULL, actor TEXT NOT NULL,
        created_at TEXT NOT NULL, until TEXT, source TEXT NOT NULL)""",
)

# Live instances: the write probe behind /healthz and `opsmedic status`.
_V4: tuple[str, ...] = (
    """CREATE TABLE heartbeats (
        holder TEXT PRIMARY KEY, ts TEXT NOT NULL, version TEXT NOT NULL, mode TEXT NOT NULL,
        healthy INTEGER NOT NULL, duties TEXT NOT NULL)""",
    "CREATE INDEX heartbeats_ts ON heartbeats (ts)",
)

MIGRATIONS: tuple[Migration, ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4))
LATEST_VERSION = MIGRATIONS[-1][0]


#: Audit hardening, applied idempotently after the migrations (any schema version): the HMAC
#: key id column, and inserts only at the next seq, so INSERT OR REPLACE (whose implicit
#: delete fires no trigger) or a write into a gap can never change the chain.
AUDIT_INSERT_ONLY = """CREATE TRIGGER IF NOT EXISTS audit_insert_next_only BEFORE INSERT ON audit
    WHEN NEW.seq != COALESCE((SELECT MAX(seq) FROM audit), 0) + 1
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: entries go at the next seq only'); END"""


#: Columns added to released tables, each added when missing (any schema version; additive,
#: so a file written by an older OpsMedic opens unchanged and old rows read as the default).
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("audit", "key_id", "TEXT"),
    ("audit", "instance", "TEXT"),  # the OpsMedic instance that wrote the entry
    ("incidents", "instance", "TEXT"),  # the instance that saw the incident first
    ("heartbeats", "instance", "TEXT NOT NULL DEFAULT ''"),
    ("heartbeats", "stopped", "INTEGER NOT NULL DEFAULT 0"),
)


def harden_audit(conn: sqlite3.Connection) -> None:
    """Add the missing ADDED_COLUMNS and the audit insert-only trigger (one transaction)."""
    with immediate(conn):
        for table, column, decl in ADDED_COLUMNS:
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        conn.execute(AUDIT_INSERT_ONLY)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction holding SQLite's write lock from the start (no upgrade races)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for an empty file."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations newer than the file's version; return the versions applied.

    Runs in one BEGIN IMMEDIATE transaction, so two processes opening a new file at once
    cannot both apply a migration, and a crash leaves the previous version intact.
    """
    applied: list[int] = []
    with immediate(conn):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        current = schema_version(conn)
        for version, statements in migrations:
            if version <= current:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, datetime.now(UTC).isoformat()),
            )
            applied.append(version)
    return applied
