"""Watchers that turn what happens into incidents, run by the server's lifespan.

Sources: the Docker event stream, managed-process exits, probe results and host metric
thresholds. Each failure goes to Incidents.report (deduplicated in the store); in heal mode
the AutoHealer then restarts what policy allows, waiting out backoff, escalating when the
budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from mcp_server.backends.docker_events import EventHistory, classify
from mcp_server.core import duties
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError
from mcp_server.healer import RESTARTABLE, Healer
from mcp_server.incidents import Incidents
from mcp_server.models import Incident, IncidentStatus, Severity

logger = logging.getLogger(__name__)

SEVERITY = {"oom": Severity.critical, "restart_loop": Severity.critical}
HOST_STREAK = 3  # consecutive critical readings before a host incident
KEEPALIVE_S = 5.0  # event watchers beat this often while their source is quiet


class AutoHealer:
    """In heal mode, one restart loop per failing target; policy decides every step."""

    def __init__(self, deps: Deps, healer: Healer) -> None:
        self.deps = deps
        self.healer = healer
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        s = self.deps.settings
        return s.mode == "heal" and s.policy.auto_restart

    def consider(self, inc: Incident) -> None:
        kind = inc.target.partition(":")[0]
        if not self.enabled or kind not in RESTARTABLE or inc.target in self._busy:
            return
        if inc.status in (IncidentStatus.escalated, IncidentStatus.awaiting_approval):
            return
        self._busy.add(inc.target)
        task = asyncio.get_running_loop().create_task(self._heal(inc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heal(self, inc: Incident) -> None:
        try:
            while True:
                current = await self.deps.store.get_incident(inc.id)
                if current is None or current.status in (
                    IncidentStatus.resolved,
                    IncidentStatus.escalated,
                ):
                    return
                decision = await self.healer.decide(inc.target)
                if not decision.allowed and decision.wait_s > 0 and not decision.escalate:
                    await self.deps.sleep(decision.wait_s)
                    continue
                reason = f"auto: {inc.symptom} ({inc.title})"
                result = await self.healer.restart(inc.target, reason, inc.id, actor="opsmedic")
                if result["ok"] or result.get("status") == "awaiting_approval":
                    return
        except OpsMedicError as exc:  # refused / escalated / unavailable: recorded already
            logger.info("auto-heal of %s stopped: %s", inc.target, exc)
        except Exception:
            logger.exception("auto-heal of %s failed", inc.target)
        finally:
            self._busy.discard(inc.target)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


class Detector:
    def __init__(self, deps: Deps, incidents: Incidents, autoheal: AutoHealer) -> None:
        self.deps = deps
        self.incidents = incidents
        self.autoheal = autoheal

    async def report(
        self, target: str, symptom: str, title: str, detail: dict[str, Any] | None = None
    ) -> Incident:
        severity = SEVERITY.get(symptom, Severity.warning)
        inc, _created = await self.incidents.report(target, symptom, title, severity, detail)
        self.autoheal.consider(inc)
        return inc

    # --- Docker --------------------------------------------------------------------------

    async def watch_docker(self) -> None:
        """Follow the engine's events forever; the backend reconnects when it drops."""
        docker = self.deps.extras["docker"]
        history = EventHistory()
        since = time.time()
        await self._scan_containers(docker)
        duties.beat()  # then on each event and a keepalive while the stream is connected
        async for event in docker.events(since=since):
            symptom = classify(event, history)
            history.record(event)
            if symptom is None or not event.name:
                continue
            detail = {
                "exit_code": event.exit_code,
                "container_id": event.id,
                "action": event.action,
            }
            await self.report(f"container:{event.name}", symptom.kind, symptom.detail, detail)

    async def _scan_containers(self, docker: Any) -> None:
        """At start: managed containers that are already down or unhealthy get incidents
        too (OpsMedic may start after the crash)."""
        rows = await docker.list_containers(self.deps.settings.policy.selector or None)
        for row in rows:
            target = f"container:{row.name}"
            if row.status in ("exited", "dead") and row.exit_code not in (None, 0):
                title = f"{row.name} is down (exited with code {row.exit_code}) at startup"
                await self.report(target, "died", title, {"exit_code": row.exit_code})
            elif row.health == "unhealthy":
                await self.report(target, "unhealthy", f"{row.name} is unhealthy at startup")

    # --- managed processes --------------------------------------------------------------

    async def watch_processes(self) -> None:
        supervisor = self.deps.extras["processes"]
        async with supervisor.subscribe() as exits:
            async for ex in duties.keepalive(exits, KEEPALIVE_S):
                if ex.requested:
                    continue
                how = f"signal {ex.signal}" if ex.signal else f"code {ex.exit_code}"
                title = f"{ex.name} exited with {how} after {ex.runtime_s:.1f}s"
                detail = {"exit_code": ex.exit_code, "signal": ex.signal, "pid": ex.pid}
                await self.report(f"process:{ex.name}", "exited", title, detail)

    # --- probes and host metrics ---------------------------------------------------------

    async def on_probe(self, result: Any) -> None:
        target = f"probe:{result.name}"
        if result.ok:
            await self.incidents.resolve_target(target, "probe passes again")
        else:
            detail = {"status_code": result.status_code, "error": result.error}
            await self.report(target, "probe_failed", f"{result.name}: {result.error}", detail)

    async def watch_host(self) -> None:
        """Every interval, grade host metrics; a metric must stay critical for
        HOST_STREAK readings in a row before it opens an incident (no flapping on spikes)."""
        host = self.deps.extras["host"]
        thresholds = self.deps.settings.thresholds
        streaks: dict[str, int] = {}
        while True:
            report = await host.read_host(thresholds)
            duties.beat()
            for name, status, value in _host_statuses(report):
                streaks[name] = streaks.get(name, 0) + 1 if status == "crit" else 0
                if streaks[name] == HOST_STREAK:
                    await self.report("host", f"{name}_high", f"host {name} at {value}",
                                      {"value": value})  # fmt: skip
                elif status == "ok":
                    await self._resolve_host(f"{name}_high", f"{name} back to {value}")
            await asyncio.sleep(thresholds.interval_s)

    async def _resolve_host(self, symptom: str, text: str) -> None:
        for inc in await self.incidents.active_for("host"):
            if inc.symptom == symptom:
                await self.incidents.transition(inc.id, IncidentStatus.resolved, text)


def _host_statuses(report: Any) -> list[tuple[str, str, str]]:
    """(metric, status, shown value) for the metrics that can open host incidents."""
    out = [
        ("cpu", report.cpu.status, f"{report.cpu.percent:.0f}%"),
        ("memory", report.memory.status, f"{report.memory.percent:.0f}%"),
        ("swap", report.swap.status, f"{report.swap.percent:.0f}%"),
    ]
    for disk in report.disks:
        out.append((f"disk {disk.mount}", disk.status, f"{disk.percent:.0f}%"))
    return out
