"""Write-behind cache of Job and Run records for the ingest path.

Writing every touched job and run after every batch costs one store round trip each
(~0.1-0.2 ms on SQLite); at tens of thousands of events per second over many jobs that is
most of the time. Instead the tracker changes the cached records and `flush()` writes each
changed record once, every `flush_s` (and before an incident is reported, at stall checks
and at close). The events themselves are stored at once; job/run records lag them by at
most `flush_s`. In this process the cache is the truth: records are read from the store
only on a miss, so on a shared store exactly one process should ingest a given job (the
hub connection holds a lease; bots push to one server).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from mcp_server.models import Job, Run
from mcp_server.store.base import Store


class RecordCache:
    def __init__(self, store: Store, max_runs: int = 10_000) -> None:
        self.store = store
        self.max_runs = max_runs
        self.jobs: dict[str, Job] = {}
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self._dirty_jobs: set[str] = set()
        self._dirty_runs: set[str] = set()

    @property
    def dirty(self) -> bool:
        return bool(self._dirty_jobs or self._dirty_runs)

    async def load(self, job_ids: Iterable[str], run_ids: Iterable[str]) -> None:
        """Read the records not cached yet (absent ones stay absent).

        Pass only the runs that may exist: a run whose first event is `started` is new.
        """
        for job_id in job_ids:
            if job_id not in self.jobs:
                found = await self.store.get_job(job_id)
                if found is not None:
                    self.jobs[job_id] = found
        for run_id in run_ids:
            if run_id in self.runs:
                self.runs.move_to_end(run_id)
            else:
                run = await self.store.get_run(run_id)
                if run is not None:
                    self.runs[run_id] = run

    def changed_job(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._dirty_jobs.add(job.id)

    def changed_run(self, run: Run) -> None:
        if run.id not in self.runs:
            self.runs[run.id] = run
        self._dirty_runs.add(run.id)

    async def flush(self) -> int:
        """Write every changed record once; returns how many were written."""
        jobs = [self.jobs[j] for j in self._dirty_jobs]
        runs = [self.runs[r] for r in self._dirty_runs]
        self._dirty_jobs, self._dirty_runs = set(), set()
        try:
            for job in jobs:
                await self.store.upsert_job(job)
            for run in runs:
                await self.store.put_run(run)
        except BaseException:  # not written: keep them dirty for the next flush
            self._dirty_jobs.update(j.id for j in jobs)
            self._dirty_runs.update(r.id for r in runs)
            raise
        self._evict()
        return len(jobs) + len(runs)

    def _evict(self) -> None:
        """Forget the least recently used runs beyond max_runs (all are clean after a flush)."""
        while len(self.runs) > self.max_runs:
            oldest = next(iter(self.runs))
            if oldest in self._dirty_runs:
                return
            self.runs.popitem(last=False)
