"""Bot jobs reported by a hub; restarted through the hub socket or a webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio

from mcp_server.drivers.base import TargetState
from mcp_server.errors import NotFound, Unavailable
from mcp_server.safety.grep import grep_lines
from mcp_server.settings import PolicySettings
from mcp_server.store.base import Store

POLL_S = 0.2


class JobDriver:
    kind = "job"
    restartable = True

    def __init__(self, store: Store, jobs: Any, restarter: Any, policy: PolicySettings) -> None:
        self.store = store
        self.jobs = jobs
        self.restarter = restarter
        self.policy = policy
        #: (last run, last heartbeat) per job when its restart was asked: verify compares
        self._before: dict[str, tuple[object, object]] = {}

    async def labels(self, name: str) -> dict[str, str] | None:
        job = await self.store.get_job(name)
        if job is None:
            raise NotFound(f"no job {name!r}; read opsmedic://jobs for ids")
        labels = job.meta.get("labels")
        return dict(labels) if isinstance(labels, dict) else {}

    async def state(self, name: str) -> TargetState:
        job = await self.store.get_job(name)
        if job is None:
            return TargetState(exists=False, detail=f"no job {name}")
        return TargetState(running=job.status in ("running", "ok"), detail=f"job {job.status}")

    async def restart(self, name: str) -> None:
        if self.restarter is None:
            raise Unavailable(
                "no way to restart jobs: set OPSMEDIC_INGEST__URL (hub) or __WEBHOOK_URL"
            )
        await self.jobs.flush()
        job = await self.store.get_job(name)
        self._before[name] = (job.last_run_id, job.last_heartbeat) if job else (None, None)
        await self.restarter.restart(name, "requested by OpsMedic")

    async def verify(self, name: str) -> tuple[bool, str]:
        """A restarted job is back when the hub reports a new run or a heartbeat for it."""
        timeout_s = self.policy.verify_timeout_s
        seen = self._before.pop(name, (None, None))
        with anyio.move_on_after(timeout_s):
            while True:
                await anyio.sleep(POLL_S)
                await self.jobs.flush()
                job = await self.store.get_job(name)
                if job and (job.last_run_id, job.last_heartbeat) != seen and job.status != "failed":
                    return True, f"job reports {job.status} (run {job.last_run_id})"
        return False, f"no new run or heartbeat from job {name} within {timeout_s:g}s"

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        """The newest runs' logs, each line tagged with its run."""
        runs = await self.store.list_runs(subject=name, limit=5)
        if not runs and await self.store.get_job(name) is None:
            raise NotFound(f"no job {name!r}; read opsmedic://jobs for ids")
        collected: list[str] = []
        for run in runs:  # newest first; keep the newest lines
            collected = [f"[run {run.id}] {line}" for line in run.log] + collected
            if len(collected) >= lines:
                break
        kept, note = grep_lines(collected, grep)
        return kept[-lines:], note

    async def identity(self, name: str) -> str:
        return f"job:{name}"

    async def managed(self) -> list[str]:
        return []  # jobs report themselves; stalls are the job tracker's to detect
