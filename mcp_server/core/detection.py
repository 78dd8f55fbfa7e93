"""Watchers that turn what happens into incidents, run by the server's lifespan.

Sources: the Docker event stream, managed-process exits, probe results and host metric
thresholds. Each failure goes to Incidents.report (deduplicated in the store); in heal mode
the AutoHealer (mcp_server.core.autoheal) then restarts what policy allows.

Several OpsMedic processes may watch one engine: each engine event is recorded in the store
under a key of its own (engine id + time + action), and only the process whose record is
new reports it, so a crash opens or bumps one incident once. Events caused by OpsMedic's own
actions (the kill/die/start of a restart) are recognised from the store's action records.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from mcp_server.backends.docker.events import DockerEvent, EventHistory, classify
from mcp_server.core import duties
from mcp_server.core.autoheal import AutoHealer
from mcp_server.core.health_score import HOST_FACT
from mcp_server.core.incidents import Incidents
from mcp_server.deps import Deps
from mcp_server.errors import Unavailable
from mcp_server.models import Event, Incident, IncidentStatus, Severity
from mcp_server.safety.policy import Policy

logger = logging.getLogger(__name__)

SEVERITY = {"oom": Severity.critical, "restart_loop": Severity.critical}
HOST_STREAK = 3  # consecutive critical readings before a host incident
# Our restart's engine events (kill, die, start, restart) all happen before the restart call
# returns (acted_at); a die after that is the target's own, however soon.
OWN_MARGIN_S = 0.05
KEEPALIVE_S = 5.0  # event watchers beat this often while their source is quiet


class Detector:
    def __init__(
        self, deps: Deps, incidents: Incidents, autoheal: AutoHealer, policy: Policy
    ) -> None:
        self.deps = deps
        self.incidents = incidents
        self.autoheal = autoheal
        self.policy = policy

    async def report(
        self, target: str, symptom: str, title: str, detail: dict[str, Any] | None = None
    ) -> Incident:
        severity = SEVERITY.get(symptom, Severity.warning)
        inc, _created = await self.incidents.report(target, symptom, title, severity, detail)
        self.autoheal.consider(inc)
        return inc

    # --- Docker --------------------------------------------------------------------------

    async def watch_docker(self) -> None:
        """Follow the engine's events forever; the backend reconnects when it drops.
        (Containers already down at startup are found by the reconcile pass.)"""
        docker = self.deps.services.docker
        if docker is None:
            raise Unavailable("no Docker backend in this server")
        history = EventHistory()
        since = self.deps.clock()
        duties.beat()  # then on each event and a keepalive while the stream is connected
        async for event in docker.events(since=since):
            await self._on_docker_event(event, history)

    async def _on_docker_event(self, event: DockerEvent, history: EventHistory) -> None:
        if not event.name:
            return
        target = f"container:{event.name}"
        if event.action in ("kill", "die", "start", "restart") and await self._ours(
            target, event.time
        ):
            return  # OpsMedic's own restart: neither a crash nor a loop
        if event.action == "destroy":
            await self.incidents.resolve_target(target, f"{event.name} was removed")
            return
        managed = self.policy.in_scope(target, event.labels)
        symptom = classify(event, history, managed=managed)
        history.record(event)
        if symptom is None or not await self._first_to_see(event, target):
            return
        detail = {"exit_code": event.exit_code, "container_id": event.id,
                  "action": event.action, "signal": history.kill_signals.get(event.id)}  # fmt: skip
        await self.report(target, symptom.kind, symptom.detail, detail)

    async def _ours(self, target: str, at: float) -> bool:
        """Does an engine event at `at` fall within one of OpsMedic's actions on target?"""
        since = datetime.fromtimestamp(at - 600, UTC)
        now = self.deps.clock()
        for run in await self.deps.store.list_actions(since, subject=target):
            begin = run.started_at.timestamp() - 0.05
            acted = run.detail.get("acted_at")
            ended = run.finished_at.timestamp() if run.finished_at else now
            end = min(ended, float(acted) if acted else now) + OWN_MARGIN_S
            if begin <= at <= end:
                return True
        return False

    async def _first_to_see(self, event: DockerEvent, target: str) -> bool:
        """Record the engine event once in the store; True for the process that did."""
        record = Event(
            id=f"docker:{event.id}:{event.time_nano}:{event.action}",
            ts=datetime.fromtimestamp(event.time, UTC),
            source="docker",
            type=f"container.{event.action}",
            target=target,
            data={"exit_code": event.exit_code, "by": self.deps.holder},
        )
        return bool(await self.deps.store.add_events([record]))

    # --- managed processes --------------------------------------------------------------

    async def watch_processes(self) -> None:
        supervisor = self.deps.services.processes
        if supervisor is None:
            raise Unavailable("no managed processes are configured")
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
        host = self.deps.services.host
        thresholds = self.deps.settings.thresholds
        streaks: dict[str, int] = {}
        while True:
            report = await host.read_host(thresholds)
            statuses = _host_statuses(report)
            grading = {name: status for name, status, _ in statuses} | {"load": report.load.status}
            duties.beat(facts={HOST_FACT: grading})  # the health score reads it
            for name, status, value in statuses:
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
