"""Store contract for a fleet on one store: the OpsMedic instance named on incidents, audit
entries and heartbeats; old rows (written before instance names) still read and verify."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mcp_server.models import AuditDraft, Heartbeat
from mcp_server.store._sqlite_schema import migrate
from mcp_server.store.base import GENESIS_HASH, Store, audit_body, audit_hash, canonical_json
from mcp_server.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


async def test_incident_names_the_instance_that_saw_it_and_each_repeat(store: Store) -> None:
    first, created = await store.open_incident(
        "container:web", "died", "web died", now=T0, instance="alpha"
    )
    again, created_again = await store.open_incident(
        "container:web", "died", "web died", now=T0 + timedelta(seconds=1), instance="beta"
    )
    assert created and not created_again and again.id == first.id
    assert again.instance == "alpha"  # who saw it first
    assert [(t.kind, t.actor) for t in again.timeline] == [("opened", "alpha"), ("repeat", "beta")]
    assert (await store.get_incident(first.id)).instance == "alpha"  # type: ignore[union-attr]
    unnamed, _ = await store.open_incident("probe:api", "probe_failed", "api down", now=T0)
    assert unnamed.instance is None and unnamed.timeline[0].actor == "opsmedic"


async def test_audit_entries_name_their_instance_and_old_entries_hash_as_before(
    store: Store,
) -> None:
    named = await store.append_audit(
        AuditDraft(
            ts=T0, actor="runner", transport="http", tool="restart", outcome="ok", instance="alpha"
        )
    )
    plain = await store.append_audit(
        AuditDraft(ts=T0, actor="runner", transport="http", tool="restart", outcome="ok")
    )
    assert named.instance == "alpha" and plain.instance is None
    assert "instance" in audit_body(named) and "instance" not in audit_body(plain)
    assert [e.instance for e in await store.audit_entries()] == ["alpha", None]
    assert (await store.verify_audit()).ok
    # an entry without the field hashes exactly as entries did before the field existed
    body = audit_body(plain)
    assert plain.hash == audit_hash(named.hash, body)
    assert "instance" not in canonical_json(body)


async def test_heartbeat_keeps_instance_and_clean_stop(store: Store) -> None:
    beat = Heartbeat(holder="alpha:1:abc", instance="alpha", ts=T0, stopped=True)
    await store.put_heartbeat(beat)
    [found] = await store.list_heartbeats(T0 - timedelta(seconds=1))
    assert (found.instance, found.stopped) == ("alpha", True)


async def test_sqlite_file_from_before_fleets_opens_and_verifies(tmp_path: Path) -> None:
    """A file at schema 4 with only the key_id column (as released) gains the new columns;
    its incidents and audit chain read and verify unchanged."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn)
    conn.execute("ALTER TABLE audit ADD COLUMN key_id TEXT")
    body = {"seq": 1, "ts": "2026-01-02T03:04:05.123456Z", "actor": "old", "transport": "cli",
            "tool": "note", "args": {}, "target": None, "decision": None, "outcome": "ok",
            "duration_ms": None, "incident_id": None}  # fmt: skip
    digest = audit_hash(GENESIS_HASH, body)
    conn.execute(
        "INSERT INTO audit (seq, ts, actor, transport, tool, args, outcome, prev_hash, hash) "
        "VALUES (1, ?, 'old', 'cli', 'note', '{}', 'ok', ?, ?)",
        (body["ts"], GENESIS_HASH, digest),
    )
    stamp = "2026-01-02T03:04:05.123456Z"
    conn.execute(
        "INSERT INTO incidents (target, symptom, title, severity, status, count, opened_at, "
        "updated_at, last_seen_at) VALUES ('container:web', 'died', 't', 'warning', 'open', 1, "
        "?, ?, ?)",
        (stamp, stamp, stamp),
    )
    conn.close()
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        [inc] = await store.list_incidents()
        assert inc.instance is None
        assert (await store.verify_audit()).ok
        entry = await store.append_audit(
            AuditDraft(actor="new", transport="cli", tool="note", outcome="ok", instance="alpha")
        )
        assert entry.seq == 2 and (await store.verify_audit()).ok
        await store.put_heartbeat(Heartbeat(holder="h", instance="alpha", ts=T0))
    finally:
        await store.close()
