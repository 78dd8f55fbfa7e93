"""The swarm watcher: desired vs actual for swarm services and nodes, every `swarm.poll_s`.

One pass reads one snapshot (nodes, services, tasks) and applies the pure rules in
mcp_server.backends.swarm.rules. A service gets one incident however many of its tasks fail
(repeats bump its count when new failures appear); a node that is down or unreachable gets an
incident saying which tasks moved where; reachable managers at most half is critical. Targets
found fine again resolve their incidents. The manager's service and node events wake a pass
at once; the poll is the reconcile pass that finds whatever no event announces.

A failure that follows a spec change (an update) carries what the update changed and the
remedy `rollback` in its incident detail: the update is the first suspect.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

import anyio

from mcp_server.backends.logsummary import summarize
from mcp_server.backends.swarm.engine import SwarmBackend, SwarmSnapshot, spec_change
from mcp_server.backends.swarm.rules import (
    QUORUM_TARGET,
    Finding,
    SwarmLimits,
    node_findings,
    quorum_finding,
    quorum_lost,
    service_finding,
    service_fine,
)
from mcp_server.core import duties
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError, Unavailable
from mcp_server.models import IncidentStatus, Severity

logger = logging.getLogger(__name__)

KINDS = ("service:", "node:", "swarm:")
LOG_LINES = 200  # per incident report: the newest lines of all replicas together
_TAG = re.compile(r" ?\[([^\]@ ]+)@[^\] ]*\] ")  # "[web.1@node2] " (tag_line's)


class SwarmWatcher:
    def __init__(self, deps: Deps, swarm: SwarmBackend, limits: SwarmLimits, report: Any) -> None:
        self.deps = deps
        self.swarm = swarm
        self.limits = limits
        self.report = report  # Detector.report(target, symptom, title, detail, severity=)
        self.below_since: dict[str, datetime] = {}
        #: target -> (symptom, failures, tasks moved) last said: a repeat only when it changes
        self.reported: dict[str, tuple[str, int, tuple[str, ...]]] = {}
        self.wake = anyio.Event()

    @classmethod
    def limits_from(cls, settings: Any) -> SwarmLimits:
        s = settings.swarm
        return SwarmLimits(s.task_failures, s.failure_window_s, s.shortfall_s)

    async def run(self) -> None:
        """The duty: a pass now, then every swarm.poll_s; waiting (not failed) while the
        manager cannot be read, so /healthz says why and it recovers by itself."""
        checked = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._follow_events)
            while True:
                try:
                    if not checked:
                        await self.swarm.check_manager()
                        checked = True
                    await self.once()
                    duties.beat()
                except Unavailable as exc:
                    checked = False
                    duties.waiting(f"swarm manager unavailable: {exc}"[:300])
                with anyio.move_on_after(self.deps.settings.swarm.poll_s):
                    await self.wake.wait()
                self.wake = anyio.Event()

    async def _follow_events(self) -> None:
        """The manager's service and node events wake a pass at once (task failures have no
        event of their own: the poll finds those)."""
        async for _ in self.swarm.events():
            self.wake.set()

    async def once(self) -> list[Finding]:
        try:
            snap = await self.swarm.snapshot()
        except Unavailable as exc:
            if "leader" not in str(exc).lower():
                raise
            found = [quorum_lost(str(exc))]
            await self._report_all(found)
            return found
        found = await self.findings(snap)
        await self._report_all(found)
        await self._resolve_fine(snap, {f.target for f in found})
        return found

    async def findings(self, snap: SwarmSnapshot) -> list[Finding]:
        out: list[Finding] = []
        for row in snap.services:
            key = f"service:{row.name}"
            if row.running < row.desired and not row.converging:
                self.below_since.setdefault(key, snap.at)
            else:
                self.below_since.pop(key, None)
            finding = service_finding(
                row, snap.tasks, self.below_since.get(key), snap.at, self.limits
            )
            if finding is not None:
                out.append(await self._with_update(finding, row.name))
        out += node_findings(snap.nodes, snap.tasks)
        quorum = quorum_finding(snap.nodes)
        return out + ([quorum] if quorum else [])

    async def _with_update(self, finding: Finding, name: str) -> Finding:
        """Failures after a real spec change: name the change; the remedy is a rollback."""
        try:
            doc = await self.swarm.spec(name)
        except OpsMedicError:
            return finding
        changed = spec_change(doc)
        if not changed:
            return finding
        update = {
            "changed": changed,
            "at": doc.get("UpdatedAt"),
            "state": (doc.get("UpdateStatus") or {}).get("State"),
        }
        detail = {**finding.detail, "update": update, "remedy": "rollback"}
        return Finding(finding.target, finding.symptom, finding.title, finding.critical, detail)

    async def _report_all(self, found: list[Finding]) -> None:
        for f in found:
            active = await self.deps.services.incidents.active_for(f.target)
            symptom = active[0].symptom if active else f.symptom  # one incident per target
            said = (symptom, int(f.detail.get("failures") or 0), tuple(f.detail.get("moved") or ()))
            if active and self.reported.get(f.target) == said:
                continue  # nothing new: no bump per poll
            self.reported[f.target] = said
            severity = Severity.critical if f.critical else Severity.warning
            detail = await self._with_logs(f)
            await self.report(f.target, symptom, f.title, detail, severity=severity)

    async def _with_logs(self, f: Finding) -> dict[str, Any]:
        """A service's logs across its replicas, summarised into templates (the evidence an
        RCA quotes): errors and warnings first, with counts and the replicas that logged."""
        if not f.target.startswith("service:"):
            return f.detail
        try:
            lines = await self.swarm.logs(f.target.partition(":")[2], lines=LOG_LINES)
        except OpsMedicError as exc:
            return {**f.detail, "log_summary": [f"logs unavailable: {exc}"]}
        tags = sorted({m.group(1) for m in map(_TAG.search, lines) if m})
        summary = summarize([_TAG.sub(" ", line, count=1) for line in lines], budget_chars=1500)
        severe = [t for t in summary.templates if t.severity in ("error", "warning")]
        shown = [t.block(compact=True).splitlines()[0] for t in (severe or summary.templates)]
        return {**f.detail, "log_summary": shown[:6], "replicas_logging": tags[:20]}

    async def _resolve_fine(self, snap: SwarmSnapshot, failing: set[str]) -> None:
        incidents = self.deps.services.incidents
        fine: dict[str, str] = {}
        for row in snap.services:
            if f"service:{row.name}" not in failing and service_fine(
                row, snap.tasks, snap.at, self.limits
            ):
                fine[f"service:{row.name}"] = (
                    f"{row.running}/{row.desired} running, no task failing"
                )
        for node in snap.nodes:
            if node.fine:
                fine[f"node:{node.name}"] = f"node {node.name} is ready again"
        if QUORUM_TARGET not in failing and snap.nodes:
            fine[QUORUM_TARGET] = "a majority of managers is reachable again"
        services = {f"service:{row.name}" for row in snap.services}
        for inc in await self.deps.store.list_incidents(
            [IncidentStatus.open, IncidentStatus.diagnosing], limit=500
        ):
            if not inc.target.startswith(KINDS) or inc.target in failing:
                continue
            text = fine.get(inc.target)
            if text is None and inc.target.startswith("service:") and inc.target not in services:
                text = f"{inc.target} was removed"
            if text is not None:
                self.reported.pop(inc.target, None)
                await incidents.transition(inc.id, IncidentStatus.resolved, text)
