"""Desired vs actual, at startup and every `policy.reconcile_s`: what events missed.

One pass:
1. actions whose holder died (record still started/verifying, lease expired) are taken over:
   the target's real state decides whether the action is finished (up) or abandoned (down);
2. incidents stuck in healing/verifying with no live action behind them leave that state:
   resolved when the target is fine, open again otherwise (no incident waits forever);
3. every managed target (each driver's `managed()`) that is not running gets an incident, so
   a crash while OpsMedic was down, or a lost event, is still seen;
4. in heal mode, open incidents of restartable targets go to the auto-healer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio

from mcp_server.core import duties
from mcp_server.core.action_lease import LEASE_TTL_S, lease_name
from mcp_server.core.actions import LIVE, Actions, action_deadline_s, in_flight
from mcp_server.core.autoheal import AutoHealer
from mcp_server.core.incidents import ACTIVE, Incidents
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError
from mcp_server.models import IncidentStatus, Run, utcnow

logger = logging.getLogger(__name__)

STUCK = (IncidentStatus.healing, IncidentStatus.verifying)
EVENT_GRACE_S = 5.0  # a target down for less than this is the event watcher's to report


class Reconciler:
    def __init__(
        self,
        deps: Deps,
        actions: Actions,
        incidents: Incidents,
        autoheal: AutoHealer,
        report: Callable[..., Awaitable[Any]],
    ) -> None:
        self.deps = deps
        self.actions = actions
        self.incidents = incidents
        self.autoheal = autoheal
        self.report = report  # Detector.report: (target, symptom, title, detail) -> Incident
        self.watching_since = utcnow()

    async def run(self) -> None:
        """The duty: a pass now, then every reconcile_s."""
        while True:
            await self.once()
            duties.beat()
            await anyio.sleep(self.deps.settings.policy.reconcile_s)

    async def once(self) -> None:
        await self._take_over_dead_actions()
        await self._unstick_incidents()
        await self._desired_vs_actual()
        await self._resume_healing()

    # --- 1 ---------------------------------------------------------------------------------

    async def _take_over_dead_actions(self) -> None:
        now = self.deps.clock()
        since = datetime.fromtimestamp(now - 86_400, UTC)
        for run in await self.deps.store.list_actions(since):
            if run.status not in LIVE or run.subject in self.actions.mine:
                continue
            name = lease_name(run.subject)
            if not await self.deps.store.acquire_lease(
                name, self.actions.holder, LEASE_TTL_S, utcnow()
            ):
                continue  # its holder is alive and renewing
            try:
                await self._settle(run)
            finally:
                await self.deps.store.release_lease(name, self.actions.holder)

    async def _settle(self, run: Run) -> None:
        target = Target.parse(run.subject)
        try:
            state = await self.actions.drivers.of(target).state(target.name)
        except OpsMedicError as exc:
            state = None
            logger.info("reconcile: cannot read %s: %s", target, exc)
        up = state is not None and state.fine
        run.status = "ok" if up else "abandoned"
        run.finished_at = utcnow()
        seen = state.detail if state is not None else "state unknown"
        run.detail = {**run.detail, "result": f"taken over by {self.actions.holder}: {seen}"}
        await self.deps.store.put_run(run)
        await self.deps.auditor.record(
            actor="opsmedic", transport="internal", tool="action:restart", target=run.subject,
            args={"run": run.id, "taken_over_from": run.detail.get("holder"), "seen": seen},
            decision="reconcile", outcome="ok" if up else "abandoned",
            incident_id=run.detail.get("incident_id"),
        )  # fmt: skip
        logger.warning("reconcile: action %s on %s left by %s: %s", run.id, target,
                       run.detail.get("holder"), run.status)  # fmt: skip

    # --- 2 ---------------------------------------------------------------------------------

    async def _unstick_incidents(self) -> None:
        now = self.deps.clock()
        live = {r.subject for r in await self._live_runs(now)}
        for inc in await self.deps.store.list_incidents(list(STUCK), limit=200):
            if inc.target in live or inc.target in self.actions.mine:
                continue
            if now - inc.updated_at.timestamp() < 2.0:
                continue  # just changed: its action record may be a moment behind
            target = Target.parse(inc.target)
            state = await self.actions.drivers.of(target).state(target.name)
            lost = "the action behind this incident ended without a result"
            if state.fine:
                text = f"found running ({state.detail}) after {lost}"
                await self.incidents.transition(inc.id, IncidentStatus.resolved, text)
            else:
                text = f"{lost}; {target} is {state.detail}"
                await self.incidents.transition(inc.id, IncidentStatus.open, text)

    async def _live_runs(self, now: float) -> list[Run]:
        since = datetime.fromtimestamp(now - action_deadline_s(self.actions.policy) - 60, UTC)
        runs = await self.deps.store.list_actions(since)
        return [r for r in runs if in_flight(r, now)]

    # --- 3 and 4 ---------------------------------------------------------------------------

    async def _desired_vs_actual(self) -> None:
        active = {i.target for i in await self.deps.store.list_incidents(ACTIVE, limit=500)}
        for driver in self.actions.drivers:
            try:
                names = await driver.managed()
            except OpsMedicError as exc:
                logger.info("reconcile: %s targets unavailable: %s", driver.kind, exc)
                continue
            for name in names:
                target = f"{driver.kind}:{name}"
                if target in active or target in self.actions.mine:
                    continue
                state = await driver.state(name)
                if state.exists and not state.running and not state.restarting:
                    if self._fresh(state.down_since):
                        continue  # went down just now, while watched: its event reports it
                    title = f"{target} should be running but is {state.detail} (reconcile)"
                    await self.report(target, "down", title, {"seen": state.detail})

    async def _resume_healing(self) -> None:
        if not self.autoheal.enabled:
            return
        waiting = [IncidentStatus.open, IncidentStatus.diagnosing]
        for inc in await self.deps.store.list_incidents(waiting, limit=200):
            self.autoheal.consider(inc)

    def _fresh(self, down_since: datetime | None) -> bool:
        if down_since is None or down_since < self.watching_since:
            return False  # went down before OpsMedic watched: no event will tell
        return (utcnow() - down_since).total_seconds() < EVENT_GRACE_S
