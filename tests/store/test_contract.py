"""Store contract: every method, run against SQLite and MongoDB (see conftest.store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mcp_server.errors import Conflict, InvalidInput, NotFound
from mcp_server.models import (
    Approval,
    AuditDraft,
    Event,
    Evidence,
    IncidentStatus,
    Job,
    Message,
    Rca,
    Run,
    Severity,
    TimelineEntry,
)
from mcp_server.store.base import Store, open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_open_is_idempotent_and_store_answers(store: Store, store_url: str) -> None:
    assert isinstance(store, Store)
    await store.open()
    assert await store.ping()
    again = open_store(store_url)  # a second instance on the same file / database
    await again.open()
    try:
        assert await again.ping()
    finally:
        await again.close()


async def test_closed_store_is_unavailable_not_crashing(store_url: str) -> None:
    closed = open_store(store_url)
    assert not await closed.ping()


# --- incidents -------------------------------------------------------------------------------


async def test_open_incident_dedupes_and_counts(store: Store) -> None:
    first, created = await store.open_incident(
        "container:web", "died", "web died", Severity.critical, {"exit": 3}, now=at(0)
    )
    assert created and first.count == 1 and first.status == IncidentStatus.open
    assert first.opened_at == first.updated_at == first.last_seen_at == at(0)
    assert [e.kind for e in first.timeline] == ["opened"]

    again, created = await store.open_incident(
        "container:web", "died", "ignored title", detail={"exit": 137, "oom": True}, now=at(5)
    )
    assert not created and again.id == first.id
    assert again.count == 2 and again.title == "web died" and again.severity == Severity.critical
    assert again.last_seen_at == again.updated_at == at(5) and again.opened_at == at(0)
    assert again.detail == {"exit": 137, "oom": True}
    assert [e.kind for e in again.timeline] == ["opened", "repeat"]
    assert await store.get_incident(first.id) == again

    other, created = await store.open_incident("container:web", "oom", "web oom", now=at(6))
    assert created and other.id != first.id


async def test_resolve_then_reopen_makes_a_fresh_incident(store: Store) -> None:
    first, _ = await store.open_incident("job:invoice", "stalled", "stalled", now=at(0))
    note = TimelineEntry(ts=at(10), actor="tester", kind="status", text="fixed")
    resolved = await store.update_incident(first.id, IncidentStatus.resolved, entry=note)
    assert resolved.status == IncidentStatus.resolved
    assert resolved.resolved_at == at(10) and resolved.updated_at == at(10)
    assert resolved.timeline[-1] == note

    fresh, created = await store.open_incident("job:invoice", "stalled", "stalled", now=at(20))
    assert created and fresh.id != first.id and fresh.count == 1
    old = await store.get_incident(first.id)
    assert old is not None and old.count == 1 and old.status == IncidentStatus.resolved

    with pytest.raises(Conflict):  # reopening the old one would make twins
        await store.update_incident(first.id, IncidentStatus.open)
    await store.update_incident(fresh.id, IncidentStatus.resolved)
    reopened = await store.update_incident(first.id, IncidentStatus.open)
    assert reopened.status == IncidentStatus.open and reopened.resolved_at is None
    bumped, created = await store.open_incident("job:invoice", "stalled", "stalled", now=at(30))
    assert not created and bumped.id == first.id and bumped.count == 2


async def test_update_incident_status_timeline_and_detail(store: Store) -> None:
    inc, _ = await store.open_incident("probe:api", "probe_failed", "api down", detail={"a": 1})
    entry = TimelineEntry(ts=at(1), kind="note", text="looking")
    updated = await store.update_incident(
        inc.id, IncidentStatus.diagnosing, entry, detail={"b.c": 2, "$d": 3}
    )
    assert updated.status == IncidentStatus.diagnosing and updated.updated_at == at(1)
    assert updated.detail == {"a": 1, "b.c": 2, "$d": 3}  # odd keys stay data (Mongo)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    again, _ = await store.open_incident("probe:api", "probe_failed", "x", detail={"at": when})
    assert again.detail["at"] == "2026-01-01T00:00:00Z"  # JSON form in both backends
    assert [e.text for e in updated.timeline] == ["api down", "looking"]
    only_note = await store.update_incident(inc.id, entry=TimelineEntry(kind="note", text="x"))
    assert only_note.status == IncidentStatus.diagnosing and len(only_note.timeline) == 4
    with pytest.raises(NotFound):
        await store.update_incident(999_999, IncidentStatus.open)
    assert await store.get_incident(999_999) is None


async def test_list_incidents_by_status_newest_first(store: Store) -> None:
    ids = []
    for i in range(4):
        inc, _ = await store.open_incident(f"container:c{i}", "died", f"c{i}", now=at(i))
        ids.append(inc.id)
    await store.update_incident(
        ids[0], IncidentStatus.resolved, TimelineEntry(ts=at(10), kind="s", text="ok")
    )
    await store.open_incident("container:c1", "died", "c1", now=at(11))  # bumps c1 to the top

    listed = await store.list_incidents()
    assert [i.id for i in listed] == [ids[1], ids[0], ids[3], ids[2]]
    assert listed[0].timeline[-1].kind == "repeat"
    open_only = await store.list_incidents([IncidentStatus.open])
    assert [i.id for i in open_only] == [ids[1], ids[3], ids[2]]
    both = await store.list_incidents([IncidentStatus.resolved, IncidentStatus.open], limit=2)
    assert [i.id for i in both] == [ids[1], ids[0]]
    assert await store.list_incidents([IncidentStatus.escalated]) == []


# --- rca, jobs, runs -------------------------------------------------------------------------


async def test_rca_put_get_replace(store: Store) -> None:
    assert await store.get_rca(7) is None
    rca = Rca(
        incident_id=7,
        summary="out of memory",
        category="oom",
        evidence=[Evidence(source="container:web", line="Killed process 12 (java)")],
        restart_safe=True,
        confidence=0.8,
        created_at=at(0),
    )
    await store.put_rca(rca)
    assert await store.get_rca(7) == rca
    replaced = rca.model_copy(update={"summary": "config typo", "category": "config"})
    await store.put_rca(replaced)
    assert await store.get_rca(7) == replaced


async def test_jobs_upsert_get_list(store: Store) -> None:
    assert await store.get_job("nope") is None
    for name in ("b", "a", "c"):
        await store.upsert_job(Job(id=name, bot="bot", updated_at=at(0), meta={"n": name}))
    changed = Job(id="a", bot="bot", status="failed", last_heartbeat=at(3), timeout_s=1.5)
    await store.upsert_job(changed)
    assert await store.get_job("a") == changed
    assert [j.id for j in await store.list_jobs()] == ["a", "b", "c"]
    assert len(await store.list_jobs(limit=2)) == 2


async def test_runs_put_get_list_newest_first(store: Store) -> None:
    assert await store.get_run("nope") is None
    for i in range(3):
        await store.put_run(Run(id=f"r{i}", subject="job:x", started_at=at(i), log=[f"l{i}"]))
    await store.put_run(Run(id="m1", kind="monitor", subject="disk", started_at=at(10)))
    done = Run(id="r1", subject="job:x", status="ok", started_at=at(1), finished_at=at(2))
    await store.put_run(done)
    assert await store.get_run("r1") == done
    assert [r.id for r in await store.list_runs()] == ["m1", "r2", "r1", "r0"]
    assert [r.id for r in await store.list_runs("job:x", limit=2)] == ["r2", "r1"]
    assert await store.list_runs("nobody") == []


# --- events ----------------------------------------------------------------------------------


def ev(key: str, seconds: float = 0) -> Event:
    return Event(id=key, ts=at(seconds), source="ingest", type="job.failed", data={"k": key})


async def test_add_events_is_idempotent_and_assigns_seq(store: Store) -> None:
    assert await store.last_event_seq() == 0 and await store.events_after() == []
    first = await store.add_events([ev("a"), ev("b"), ev("a"), ev("c")])
    assert [e.id for e in first] == ["a", "b", "c"]
    seqs = [e.seq or 0 for e in first]
    assert all(seqs) and seqs == sorted(seqs) and len(set(seqs)) == 3

    second = await store.add_events([ev("b"), ev("c"), ev("d", 1)])
    assert [e.id for e in second] == ["d"] and second[0].seq is not None
    assert second[0].seq > max(seqs)
    assert await store.add_events([ev("a")]) == [] and await store.add_events([]) == []

    everything = await store.events_after()
    assert everything == first + second
    assert await store.last_event_seq() == second[0].seq


async def test_events_after_cursor_and_limit(store: Store) -> None:
    added = await store.add_events([ev(f"e{i}", i) for i in range(10)])
    cursor = 0
    seen: list[str] = []
    while batch := await store.events_after(cursor, limit=3):
        assert len(batch) <= 3
        seen += [e.id for e in batch]
        cursor = batch[-1].seq or 0
    assert seen == [f"e{i}" for i in range(10)]
    assert await store.events_after(added[-1].seq or 0) == []


# --- approvals -------------------------------------------------------------------------------


async def test_approval_is_decided_once(store: Store) -> None:
    approval = Approval(
        id="nonce1",
        incident_id=1,
        action_hash="abc",
        action={"tool": "restart", "target": "container:web"},
        approver="ops@example.test",
        expires_at=at(600),
        created_at=at(0),
    )
    await store.put_approval(approval)
    assert await store.get_approval("nonce1") == approval
    assert await store.decide_approval("nonce1", "approved", at(5), via="email")
    assert not await store.decide_approval("nonce1", "denied", at(6), via="email")
    decided = await store.get_approval("nonce1")
    assert decided is not None and decided.status == "approved"
    assert decided.decided_at == at(5) and decided.via == "email"
    assert not await store.decide_approval("missing", "approved", at(5))
    with pytest.raises(InvalidInput):
        await store.decide_approval("nonce1", "maybe", at(5))
    assert await store.get_approval("missing") is None


# --- messages --------------------------------------------------------------------------------


def msg(key: str, due: float, **kw: object) -> Message:
    base = {"id": key, "to": ["ops@example.test"], "subject": key}
    times = {"next_attempt_at": at(due), "created_at": at(due)}
    return Message.model_validate({**base, **times, **kw})


async def test_messages_enqueue_once_due_and_update(store: Store) -> None:
    assert await store.enqueue_message(msg("m1", 0, incident_id=1, headers={"X-A": "1"}))
    assert not await store.enqueue_message(msg("m1", 99, subject="changed"))
    assert await store.enqueue_message(msg("m2", 5, incident_id=1))
    assert await store.enqueue_message(msg("m3", 100))
    assert await store.enqueue_message(msg("in1", 0, direction="in", status="processed"))

    assert [m.id for m in await store.due_messages(at(10))] == ["m1", "m2"]
    assert [m.id for m in await store.due_messages(at(10), limit=1)] == ["m1"]
    stored = await store.get_message("m1")
    assert stored is not None and stored.subject == "m1" and stored.headers == {"X-A": "1"}

    await store.update_message(stored.model_copy(update={"status": "sent", "sent_at": at(1)}))
    retry = msg("m2", 50, incident_id=1, attempts=1, last_error="timeout")
    await store.update_message(retry)
    assert await store.due_messages(at(10)) == []
    assert await store.get_message("m2") == retry
    with pytest.raises(NotFound):
        await store.update_message(msg("ghost", 0))
    assert await store.get_message("ghost") is None

    assert [m.id for m in await store.list_messages(incident_id=1)] == ["m2", "m1"]
    assert [m.id for m in await store.list_messages(direction="in")] == ["in1"]
    assert len(await store.list_messages()) == 4 and len(await store.list_messages(limit=2)) == 2


async def test_webhook_deliveries_are_their_own_queue(store: Store) -> None:
    """Webhook rows (direction "hook") share the outbox table but never reach the mail queue."""
    assert await store.enqueue_message(msg("mail", 0))
    assert await store.enqueue_message(msg("hook:a:e1", 0, direction="hook", to=["a"]))
    assert not await store.enqueue_message(msg("hook:a:e1", 0, direction="hook", to=["a"]))
    assert await store.enqueue_message(msg("hook:b:e1", 20, direction="hook", to=["b"]))
    assert [m.id for m in await store.due_messages(at(10))] == ["mail"]
    assert [m.id for m in await store.due_messages(at(10), direction="hook")] == ["hook:a:e1"]
    both = await store.due_messages(at(30), direction="hook")
    assert [m.id for m in both] == ["hook:a:e1", "hook:b:e1"] and both[0].to == ["a"]


# --- leases ----------------------------------------------------------------------------------


async def test_leases_exclusive_renew_expire_release(store: Store) -> None:
    assert await store.acquire_lease("imap", "a", 30, at(0))
    assert not await store.acquire_lease("imap", "b", 30, at(1))
    assert await store.acquire_lease("imap", "a", 30, at(20))  # renew: now valid until 50
    assert not await store.acquire_lease("imap", "b", 30, at(40))
    assert await store.acquire_lease("other", "b", 30, at(40))  # names are independent
    assert await store.acquire_lease("imap", "b", 30, at(50))  # expired: taken over
    assert not await store.acquire_lease("imap", "a", 30, at(51))
    await store.release_lease("imap", "a")  # not the holder: no effect
    assert not await store.acquire_lease("imap", "a", 30, at(52))
    await store.release_lease("imap", "b")
    assert await store.acquire_lease("imap", "a", 30, at(53))


async def test_zero_limit_means_nothing(store: Store) -> None:
    await store.open_incident("container:web", "died", "web died")
    await store.add_events([ev("a")])
    await store.append_audit(
        AuditDraft(actor="a", transport="t", tool="t", outcome="ok")  # one entry
    )
    assert await store.list_incidents(limit=0) == []
    assert await store.events_after(0, limit=0) == []
    assert await store.audit_entries(limit=0) == [] and await store.recent_audit(0) == []
