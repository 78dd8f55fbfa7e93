"""Jobs and runs from ingest events, and what they mean: failed runs, stalls, error spikes.

`JobTracker.handle(batch)` is the `on_batch` of both ingest modes. Per batch it
1. stores the events on the feed (idempotent by event id: `Event.id` = the hub's id,
   source "ingest", type "job.<type>", target "job:<job>"); only the *new* ones go on;
2. applies them in order to the job and run records. A run's id is `<job>:<hub run id>`; it
   keeps status (running / ok / failed), timings, error and its last `log_lines` log lines.
   A `started` event begins a new run record (it is not looked up in the store);
3. detects: a failed run opens (or repeats) incident job:ID `run_failed`; an error-rate spike
   in a job's log lines opens `error_spike`; a successful run resolves the job's open incidents.
`check_stalls(now)` opens `stalled` for running jobs whose last sign of life (any event,
timed by OpsMedic's clock, so a bot's clock skew cannot hide or fake a stall) is older than
their timeout (`timeout_s` from the started event, else the default).

Job and run records go through a write-behind cache (jobs_cache): each changed record is
written once per `flush_s`, before any incident is reported, at stall checks and at
`close()`; so they lag the stored events by at most `flush_s`. A crash loses at most that
much derived state (the events are stored; replays are duplicates). The error-spike window
lives in memory. Within one process batches are applied one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp_server.backends.ingest.feed import IngestBatch
from mcp_server.backends.ingest.schema import IngestEvent, Rejection
from mcp_server.core import duties
from mcp_server.core.events import EventBus
from mcp_server.core.incidents import ACTIVE, Incidents
from mcp_server.core.jobs_cache import RecordCache
from mcp_server.core.jobs_rules import LogWindow, SpikeRule, is_error_line, run_key
from mcp_server.models import Event, Incident, IncidentStatus, Job, Run, Severity
from mcp_server.safety.audit import Auditor
from mcp_server.store.base import Store

__all__ = ["IngestReport", "JobTracker", "SpikeRule", "is_error_line", "run_key", "to_event"]

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"ok", "failed"})  # run statuses
TERMINAL_TYPES = frozenset({"finished", "failed"})  # event types that end a run
MAX_JOBS_SCANNED = 10_000


@dataclass
class IngestReport:
    received: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    jobs: int = 0
    runs: int = 0
    reported: list[int] = field(default_factory=list)  # incident ids opened or repeated
    resolved: list[int] = field(default_factory=list)


@dataclass
class _Work:
    """One batch: its time, the records it touched, and detections to act on (in order)."""

    now: datetime
    jobs: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    actions: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class JobTracker:
    """Turns ingest batches into events, jobs, runs and incidents (see the module docstring).

    `handle` is the on_batch of both ingest modes; run `watch_stalls` as a lifespan watcher
    and `await close()` at shutdown (it writes the last changed records).
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        incidents: Incidents,
        clock: Callable[[], float] = time.time,
        *,
        auditor: Auditor | None = None,
        default_timeout_s: float = 300.0,
        log_lines: int = 200,
        spike: SpikeRule | None = None,
        flush_s: float = 0.5,
    ) -> None:
        self.store = store
        self.bus = bus
        self.incidents = incidents
        self.clock = clock
        self.auditor = auditor
        self.default_timeout_s = default_timeout_s
        self.log_lines = log_lines
        self.spike = spike or SpikeRule()
        self.flush_s = flush_s
        self.cache = RecordCache(store)
        self._windows: dict[str, LogWindow] = {}
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._cursors: dict[str, str] = {}
        self.rejected_total = 0
        self.counts = {"received": 0, "new": 0, "duplicates": 0}
        self.recent_rejections: deque[tuple[str, Rejection]] = deque(maxlen=100)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- entry points ---------------------------------------------------------------------

    async def handle(self, batch: IngestBatch) -> IngestReport:
        """on_batch for HubClient and ingest_route: count/audit rejections, ingest events."""
        if batch.rejected:
            await self._reject(batch.source, batch.rejected)
        report = await self.ingest(batch.events, source=batch.source)
        report.rejected = len(batch.rejected)
        return report

    async def ingest(self, batch: Sequence[IngestEvent], source: str = "") -> IngestReport:
        """Store new events, update their jobs and runs, detect; duplicates are skipped."""
        report = IngestReport(received=len(batch))
        if not batch:
            return report
        async with self._lock:
            added = await self.bus.publish([to_event(e, source) for e in batch])
            fresh = _first_new(batch, {e.id for e in added})
            report.new, report.duplicates = len(fresh), len(batch) - len(fresh)
            for key in ("received", "new", "duplicates"):
                self.counts[key] += getattr(report, key)
            if fresh:
                work = _Work(now=self._now())
                await self.cache.load(dict.fromkeys(e.job for e in fresh), _known_runs(fresh))
                for event in fresh:
                    self._apply(work, event)
                report.jobs, report.runs = len(work.jobs), len(work.runs)
                await self._settle(work, report)
            self._cursors[source] = batch[-1].id
        return report

    async def flush(self) -> None:
        """Write every changed job and run record now."""
        async with self._lock:
            await self.cache.flush()

    async def close(self) -> None:
        """Stop the delayed flush and write what is left."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
            self._flusher = None
        await self.flush()

    def cursor(self, source: str) -> str | None:
        """Id of the last event handled from `source` (the hub's resume point)."""
        return self._cursors.get(source)

    async def load_cursor(self, source: str, max_scan: int = 100_000) -> str | None:
        """The cursor, or after a restart the last stored event from `source` (scans back)."""
        if source in self._cursors:
            return self._cursors[source]
        end = await self.store.last_event_seq()
        while end > 0 and max_scan > 0:
            start = max(0, end - 2000)
            found = await self.store.events_after(start, end - start)
            mine = [e for e in found if e.source == "ingest" and e.data.get("via") == source]
            if mine:
                self._cursors[source] = mine[-1].id
                return mine[-1].id
            max_scan -= end - start
            end = start
        return None

    # --- applying and saving ----------------------------------------------------------------

    async def _settle(self, work: _Work, report: IngestReport) -> None:
        """Write records now when incidents will point at them, else within flush_s."""
        if self.flush_s <= 0 or any(kind != "ok" for kind, _, _ in work.actions):
            await self.cache.flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        await self._act(work, report)

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_s)
        try:
            await self.flush()
        except Exception:  # records stay dirty; the next batch schedules another try
            logger.exception("writing job/run records failed; will retry")

    def _apply(self, work: _Work, ev: IngestEvent) -> None:
        # pydantic attribute writes cost ~1 us each: write only what changes
        job = self.cache.jobs.get(ev.job)
        if job is None:
            job = Job(id=ev.job)
        if ev.job not in work.jobs:  # any event is a sign of life, timed by our clock
            job.updated_at = job.last_heartbeat = work.now
            self.cache.changed_job(job)
            work.jobs.add(ev.job)
        key = run_key(ev.job, ev.run)
        run = self.cache.runs.get(key)
        if run is None:
            run = Run(id=key, subject=ev.job, started_at=ev.ts)
            run.detail["hub_run"] = ev.run
        if key not in work.runs:
            self.cache.changed_run(run)
            work.runs.add(key)
        if ev.bot and ev.bot != job.bot:
            job.bot = run.detail["bot"] = ev.bot
        if ev.type in TERMINAL_TYPES:
            self._finish(work, job, run, ev)
        else:
            self._progress(work, job, run, ev)

    def _progress(self, work: _Work, job: Job, run: Run, ev: IngestEvent) -> None:
        """started / heartbeat / log: the run is alive (unless it already ended)."""
        if ev.type == "started":
            run.started_at = ev.ts
            if run.finished_at is not None:  # the start arrived after the end
                run.detail["duration_s"] = round((run.finished_at - ev.ts).total_seconds(), 3)
            if ev.timeout_s is not None:
                job.timeout_s = run.detail["timeout_s"] = ev.timeout_s
        if run.status not in TERMINAL:
            if job.status != "running":
                job.status = "running"
            if job.last_run_id != run.id:
                job.last_run_id = run.id
        if ev.type == "log" and ev.line is not None:
            error = is_error_line(ev.line, ev.level)
            run.log.append(f"{ev.level.upper()} {ev.line}" if ev.level else ev.line)
            if len(run.log) > self.log_lines:
                del run.log[: len(run.log) - self.log_lines]
            window = self._windows.get(job.id)
            if window is None:
                window = self._windows[job.id] = LogWindow(self.spike)
            spike = window.add(ev.ts.timestamp(), ev.line, error)
            if spike is not None:
                work.actions.append(("spike", job.id, {**spike, "run": run.id}))

    def _finish(self, work: _Work, job: Job, run: Run, ev: IngestEvent) -> None:
        """finished / failed: end the run; the job follows when it is the job's current run."""
        run.status = "ok" if ev.type == "finished" else "failed"
        run.finished_at = ev.ts
        run.error = ev.error if ev.type == "failed" else None
        run.detail["duration_s"] = round((ev.ts - run.started_at).total_seconds(), 3)
        # an older run ending late does not decide the state of a job that runs again
        current = job.last_run_id in (None, run.id) or job.status != "running"
        if current:
            job.status, job.last_run_id = run.status, run.id
        if run.status == "failed":
            job.meta["last_error"] = (ev.error or "")[:500]
            detail = {"run": run.id, "error": ev.error, "bot": job.bot or None}
            work.actions.append(("failed", job.id, detail))
        elif current:
            work.actions.append(("ok", job.id, {"run": run.id}))

    # --- detection ------------------------------------------------------------------------

    async def _act(self, work: _Work, report: IngestReport) -> None:
        active: dict[str, list[int]] | None = None
        for kind, job_id, detail in work.actions:
            target = f"job:{job_id}"
            if kind == "ok":
                if active is None:
                    active = await self._active_by_target()
                for incident_id in active.pop(target, []):
                    text = f"run {detail['run']} succeeded"
                    await self.incidents.transition(incident_id, IncidentStatus.resolved, text)
                    report.resolved.append(incident_id)
                continue
            inc, _ = await self._report(kind, job_id, detail)
            report.reported.append(inc.id)
            if active is not None and inc.id not in active.setdefault(target, []):
                active[target].append(inc.id)

    async def _report(
        self, kind: str, job_id: str, detail: dict[str, Any]
    ) -> tuple[Incident, bool]:
        target = f"job:{job_id}"
        if kind == "failed":
            error = (detail.get("error") or "no error given")[:160]
            title = f"job {job_id}: run {detail['run']} failed: {error}"
            return await self.incidents.report(target, "run_failed", title, detail=detail)
        title = (
            f"job {job_id}: error spike in its log ({detail['errors_in_window']} error lines "
            f"in {detail['window_s']:.0f} s, {detail['error_share_of_last']:.0%} of recent lines)"
        )
        return await self.incidents.report(target, "error_spike", title, detail=detail)

    async def _active_by_target(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for inc in await self.store.list_incidents(ACTIVE, limit=1000):
            if inc.target.startswith("job:"):
                found.setdefault(inc.target, []).append(inc.id)
        return found

    async def check_stalls(self, now: datetime | None = None) -> list[Job]:
        """Mark running jobs silent for longer than their timeout `stalled`; open incidents."""
        now = now or self._now()
        stalled: list[Job] = []
        async with self._lock:
            await self.cache.flush()
            for stored in await self.store.list_jobs(limit=MAX_JOBS_SCANNED):
                job = self.cache.jobs.get(stored.id, stored)
                timeout = job.timeout_s or self.default_timeout_s
                seen = job.last_heartbeat or job.updated_at
                if job.status == "running" and (now - seen).total_seconds() > timeout:
                    job.status, job.updated_at = "stalled", now
                    self.cache.changed_job(job)
                    stalled.append(job)
            await self.cache.flush()
            for job in stalled:
                await self._report_stall(job, now)
        return stalled

    async def _report_stall(self, job: Job, now: datetime) -> None:
        timeout = job.timeout_s or self.default_timeout_s
        silent = round((now - (job.last_heartbeat or job.updated_at)).total_seconds(), 1)
        title = f"job {job.id}: no heartbeat for {silent:.0f} s (timeout {timeout:.0f} s)"
        detail = {"run": job.last_run_id, "silent_s": silent, "timeout_s": timeout}
        await self.incidents.report(f"job:{job.id}", "stalled", title, Severity.warning, detail)

    async def watch_stalls(self, interval_s: float = 15.0) -> None:
        """Run check_stalls every interval_s, forever (a lifespan watcher)."""
        while True:
            await asyncio.sleep(interval_s)
            found = await self.check_stalls()
            duties.beat()
            if found:
                logger.warning("stalled jobs: %s", ", ".join(j.id for j in found))

    async def _reject(self, source: str, rejected: list[Rejection]) -> None:
        self.rejected_total += len(rejected)
        self.recent_rejections.extend((source, r) for r in rejected)
        logger.info(
            "ingest from %s: %d event(s) rejected, e.g. %s",
            source,
            len(rejected),
            rejected[0].reason,
        )
        if self.auditor is not None:
            reasons = [r.as_dict() for r in rejected[:5]]
            await self.auditor.record(
                actor=source or "ingest",
                transport="websocket",
                tool="ingest",
                outcome="rejected",
                args={"rejected": len(rejected), "examples": reasons},
            )


def _known_runs(events: Sequence[IngestEvent]) -> list[str]:
    """Runs that may already be stored: those whose first event here is not `started`."""
    first: dict[str, str] = {}
    for ev in events:
        first.setdefault(run_key(ev.job, ev.run), ev.type)
    return [key for key, kind in first.items() if kind != "started"]


def _first_new(batch: Sequence[IngestEvent], new_ids: set[str]) -> list[IngestEvent]:
    """The events the store inserted (the first occurrence of each new id), in order."""
    fresh = []
    for event in batch:
        if event.id in new_ids:
            new_ids.discard(event.id)
            fresh.append(event)
    return fresh


def to_event(ev: IngestEvent, source: str) -> Event:
    """The feed's Event for an ingest event (`via` = where it came from, for resuming)."""
    data: dict[str, Any] = {"job": ev.job, "run": ev.run}
    for name in ("bot", "line", "level", "error", "timeout_s"):
        value = getattr(ev, name)
        if value is not None:
            data[name] = value
    if source:
        data["via"] = source
    return Event(
        id=ev.id,
        ts=ev.ts,
        source="ingest",
        type=f"job.{ev.type}",
        target=f"job:{ev.job}",
        data=data,
    )
