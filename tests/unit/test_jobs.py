"""JobTracker: jobs and runs from events, failed-run / stall / error-spike incidents.

Uses a real SqliteStore in tmp_path and an injected clock (no sleeps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mcp_server.backends.ingest.build import IngestBatch, IngestEvent, Rejection
from mcp_server.core.events import EventBus
from mcp_server.core.incidents import Incidents
from mcp_server.core.jobs import JobTracker, SpikeRule, is_error_line
from mcp_server.models import Incident, IncidentStatus
from mcp_server.safety.audit import Auditor
from mcp_server.safety.redaction import Redactor
from mcp_server.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Env:
    store: SqliteStore
    tracker: JobTracker
    clock: Clock
    incidents: Incidents

    async def job_incidents(self, job: str) -> list[Incident]:
        found = await self.store.list_incidents(limit=500)
        return sorted((i for i in found if i.target == f"job:{job}"), key=lambda i: i.id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    store = SqliteStore(f"sqlite:///{tmp_path}/db.sqlite")
    await store.open()
    bus = EventBus(store)
    incidents = Incidents(store, bus)
    clock = Clock()
    auditor = Auditor(store, Redactor())
    tracker = JobTracker(store, bus, incidents, clock, auditor=auditor, log_lines=5, flush_s=0)
    try:
        yield Env(store, tracker, clock, incidents)
    finally:
        await store.close()


_seq = iter(range(1, 10**9))


def ev(kind: str, job: str = "bot", run: str = "1", at: float = 0.0, **kw: Any) -> IngestEvent:
    ident = kw.pop("id", None) or f"e{next(_seq)}"
    return IngestEvent(id=ident, type=kind, job=job, run=run, ts=T0 + timedelta(seconds=at), **kw)


async def test_a_run_from_start_to_finish(env: Env) -> None:
    batch = [
        ev("started", at=0, bot="w1", timeout_s=60),
        ev("heartbeat", at=1),
        ev("log", at=2, line="charged 3 invoices", level="info"),
        ev("finished", at=10),
    ]
    report = await env.tracker.ingest(batch)
    assert (report.received, report.new, report.duplicates, report.jobs, report.runs) == (
        4,
        4,
        0,
        1,
        1,
    )
    job = await env.store.get_job("bot")
    run = await env.store.get_run("bot:1")
    assert job is not None and run is not None
    assert (job.status, job.bot, job.last_run_id, job.timeout_s) == ("ok", "w1", "bot:1", 60)
    assert (run.status, run.subject, run.kind) == ("ok", "bot", "job")
    assert run.started_at == T0 and run.finished_at == T0 + timedelta(seconds=10)
    assert run.detail["duration_s"] == 10 and run.detail["hub_run"] == "1"
    assert run.log == ["INFO charged 3 invoices"]
    events = await env.store.events_after(0, 100)
    assert [e.type for e in events] == ["job.started", "job.heartbeat", "job.log", "job.finished"]
    assert {e.source for e in events} == {"ingest"} and events[0].target == "job:bot"
    assert events[0].id == batch[0].id and events[2].data["line"] == "charged 3 invoices"


async def test_duplicates_are_stored_and_applied_once(env: Env) -> None:
    line = ev("log", line="hello", id="dup-1")
    first = await env.tracker.ingest([ev("started", id="s-1"), line, line])
    again = await env.tracker.ingest([line, ev("started", id="s-1")])
    assert (first.new, first.duplicates) == (2, 1)
    assert (again.new, again.duplicates) == (0, 2)
    run = await env.store.get_run("bot:1")
    assert run is not None and run.log == ["hello"]
    assert len(await env.store.events_after(0, 100)) == 2


async def test_log_lines_are_bounded_per_run(env: Env) -> None:
    await env.tracker.ingest([ev("log", at=i, line=f"line {i}") for i in range(12)])
    run = await env.store.get_run("bot:1")
    assert run is not None and run.log == [f"line {i}" for i in range(7, 12)]


async def test_failed_run_opens_incident_and_next_ok_run_resolves_it(env: Env) -> None:
    await env.tracker.ingest([ev("started", run="1"), ev("failed", run="1", error="SMTP down")])
    (inc,) = await env.job_incidents("bot")
    assert (inc.symptom, inc.status) == ("run_failed", IncidentStatus.open)
    assert "SMTP down" in inc.title and inc.detail["run"] == "bot:1"
    job = await env.store.get_job("bot")
    assert job is not None and job.status == "failed" and job.meta["last_error"] == "SMTP down"
    run = await env.store.get_run("bot:1")
    assert run is not None and (run.status, run.error) == ("failed", "SMTP down")

    await env.tracker.ingest([ev("started", run="2", at=5), ev("failed", run="2", at=6)])
    (inc,) = await env.job_incidents("bot")
    assert inc.count == 2  # a repeat, not a twin

    report = await env.tracker.ingest([ev("started", run="3", at=9), ev("finished", run="3")])
    (inc,) = await env.job_incidents("bot")
    assert inc.status == IncidentStatus.resolved and report.resolved == [inc.id]
    assert "run bot:3 succeeded" in inc.timeline[-1].text


async def test_failure_and_recovery_in_one_batch(env: Env) -> None:
    report = await env.tracker.ingest(
        [ev("failed", run="1", error="boom"), ev("started", run="2"), ev("finished", run="2")]
    )
    (inc,) = await env.job_incidents("bot")
    assert inc.status == IncidentStatus.resolved
    assert report.reported == [inc.id] and report.resolved == [inc.id]


async def test_other_jobs_incidents_stay_open(env: Env) -> None:
    await env.tracker.ingest([ev("failed", job="a", error="x"), ev("finished", job="b")])
    (inc,) = await env.job_incidents("a")
    assert inc.status == IncidentStatus.open


async def test_an_older_run_ending_late_does_not_decide_the_job(env: Env) -> None:
    await env.tracker.ingest([ev("started", run="1"), ev("started", run="2", at=5)])
    await env.tracker.ingest([ev("finished", run="1", at=6)])
    job = await env.store.get_job("bot")
    assert job is not None and (job.status, job.last_run_id) == ("running", "bot:2")
    await env.tracker.ingest([ev("failed", run="2", at=7, error="oops")])
    job = await env.store.get_job("bot")
    assert job is not None and job.status == "failed"


async def test_end_before_start_still_makes_one_run(env: Env) -> None:
    await env.tracker.ingest([ev("finished", run="9", at=20)])
    await env.tracker.ingest([ev("started", run="9", at=5)])
    run = await env.store.get_run("bot:9")
    job = await env.store.get_job("bot")
    assert run is not None and run.status == "ok" and run.detail["duration_s"] == 15
    assert job is not None and job.status == "ok"


async def test_stall_detected_with_injected_clock(env: Env) -> None:
    await env.tracker.ingest([ev("started", timeout_s=30), ev("heartbeat", at=1)])
    env.clock.advance(29)
    assert await env.tracker.check_stalls() == []
    env.clock.advance(2)
    (stalled,) = await env.tracker.check_stalls()
    assert stalled.id == "bot" and stalled.status == "stalled"
    (inc,) = await env.job_incidents("bot")
    assert inc.symptom == "stalled" and inc.detail["timeout_s"] == 30
    env.clock.advance(100)
    assert await env.tracker.check_stalls() == []  # already stalled: no repeat storm

    await env.tracker.ingest([ev("heartbeat", at=200)])
    job = await env.store.get_job("bot")
    assert job is not None and job.status == "running"
    await env.tracker.ingest([ev("finished", at=201)])
    (inc,) = await env.job_incidents("bot")
    assert inc.status == IncidentStatus.resolved


async def test_stall_uses_the_default_timeout_and_ignores_finished_jobs(env: Env) -> None:
    await env.tracker.ingest([ev("started", job="long"), ev("finished", job="done")])
    env.clock.advance(299)
    assert await env.tracker.check_stalls() == []
    env.clock.advance(2)
    stalled = await env.tracker.check_stalls()
    assert [j.id for j in stalled] == ["long"]
    # an explicit `now` works too
    later = T0 + timedelta(hours=1)
    assert await env.tracker.check_stalls(now=later) == []


async def test_error_spike_by_count_within_window(env: Env) -> None:
    lines = [ev("log", at=i * 10, line=f"ERROR db timeout {i}") for i in range(5)]
    report = await env.tracker.ingest([ev("log", at=0, line="ok", level="info"), *lines])
    (inc,) = await env.job_incidents("bot")
    assert inc.symptom == "error_spike" and report.reported == [inc.id]
    assert inc.detail["errors_in_window"] == 5 and len(inc.detail["sample"]) == 5
    # more errors within the cooldown do not repeat the report
    await env.tracker.ingest([ev("log", at=45, line="error again", level="error")])
    (inc,) = await env.job_incidents("bot")
    assert inc.count == 1


async def test_spread_out_errors_are_no_spike_until_they_dominate(env: Env) -> None:
    tracker = env.tracker
    # 4 errors per 100 s never reach 5 within 60 s; the share of the last 20 stays low
    slow = [ev("log", at=i * 30, line="fine", level="info") for i in range(16)]
    slow += [ev("log", at=600 + i * 70, line="failure", level="error") for i in range(4)]
    await tracker.ingest(slow)
    assert await env.job_incidents("bot") == []
    # now 11 of the last 20 lines are errors (spaced 70 s apart): > 50 %
    more = [ev("log", at=1000 + i * 70, line="failure", level="error") for i in range(7)]
    await tracker.ingest(more)
    (inc,) = await env.job_incidents("bot")
    assert inc.symptom == "error_spike" and inc.detail["error_share_of_last"] > 0.5


def test_error_lines() -> None:
    assert is_error_line("anything", "ERROR")
    assert is_error_line("x", "critical")
    assert not is_error_line("error in the name of the file", "info")
    assert is_error_line("Traceback (most recent call last):", None)
    assert not is_error_line("terror-bot started", None)
    assert SpikeRule().errors == 5


async def test_rejections_are_counted_and_audited(env: Env) -> None:
    batch = IngestBatch(
        events=[ev("heartbeat")],
        rejected=[Rejection("type 'x' is not one of ...", "r1", 0), Rejection("bad ts", None, 3)],
        source="hub:ws://127.0.0.1:1/events",
    )
    report = await env.tracker.handle(batch)
    assert (report.new, report.rejected) == (1, 2)
    assert env.tracker.rejected_total == 2
    (entry,) = await env.store.recent_audit(5)
    assert (entry.tool, entry.outcome, entry.actor) == ("ingest", "rejected", batch.source)
    assert entry.args["rejected"] == 2 and entry.args["examples"][0]["id"] == "r1"


async def test_cursor_survives_a_restart(env: Env) -> None:
    hub = "hub:ws://127.0.0.1:9/x"
    await env.tracker.handle(IngestBatch(events=[ev("started", id="h1")], source=hub))
    await env.tracker.handle(IngestBatch(events=[ev("heartbeat", id="h2")], source=hub))
    await env.tracker.handle(IngestBatch(events=[ev("heartbeat", id="p1")], source="ingest:x"))
    assert env.tracker.cursor(hub) == "h2"
    fresh = JobTracker(env.store, env.tracker.bus, env.incidents, env.clock)
    assert fresh.cursor(hub) is None
    assert await fresh.load_cursor(hub) == "h2"
    assert await fresh.load_cursor("hub:ws://elsewhere/") is None


async def test_records_are_written_behind_but_before_incidents(env: Env) -> None:
    tracker = JobTracker(env.store, env.tracker.bus, env.incidents, env.clock, flush_s=3600)
    await tracker.ingest([ev("started", job="wb"), ev("heartbeat", job="wb")])
    assert await env.store.get_job("wb") is None  # not yet written
    assert len(await env.store.events_after(0, 10)) == 2  # the events are
    await tracker.ingest([ev("failed", job="wb", error="x")])
    run = await env.store.get_run("wb:1")  # an incident points at it: written first
    assert run is not None and run.status == "failed"
    await tracker.ingest([ev("started", job="wb", run="2")])
    assert await env.store.get_run("wb:2") is None
    await tracker.close()
    run = await env.store.get_run("wb:2")
    assert run is not None and run.status == "running"


async def test_stall_check_sees_unflushed_heartbeats(env: Env) -> None:
    tracker = JobTracker(env.store, env.tracker.bus, env.incidents, env.clock, flush_s=3600)
    await tracker.ingest([ev("started", job="slow", timeout_s=10)])
    env.clock.advance(20)
    await tracker.ingest([ev("heartbeat", job="slow")])  # cached, not written yet
    assert await tracker.check_stalls() == []
    env.clock.advance(11)
    assert [j.id for j in await tracker.check_stalls()] == ["slow"]
    job = await env.store.get_job("slow")
    assert job is not None and job.status == "stalled"
    await tracker.close()
