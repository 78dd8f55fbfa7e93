"""In heal mode the server restarts what policy allows, one scheduler per failing target.

The schedulers are only timers: what they decide on (records, budgets, leases, holds) is in
the store, so a restarted OpsMedic (or another one on the same store) picks up where this one
left, through the reconciler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mcp_server.core.action_lease import LEASE_TTL_S
from mcp_server.core.actions import Actions, is_down_symptom
from mcp_server.core.incidents import Incidents
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError, Refused
from mcp_server.models import Incident, IncidentStatus

logger = logging.getLogger(__name__)

STOP = (IncidentStatus.resolved, IncidentStatus.escalated, IncidentStatus.awaiting_approval)
SELF_HEAL_WAIT_S = 2.0  # re-look this often while Docker's own restart policy works
MAX_WAIT_S = 300.0


class AutoHealer:
    def __init__(self, deps: Deps, actions: Actions, incidents: Incidents) -> None:
        self.deps = deps
        self.actions = actions
        self.incidents = incidents
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        s = self.deps.settings
        return s.mode == "heal" and s.policy.auto_restart

    def consider(self, inc: Incident) -> None:
        """Start healing inc's target unless it is already being looked after here."""
        kind = inc.target.partition(":")[0]
        if not self.enabled or kind not in self.actions.drivers.restartable:
            return
        if inc.target in self._busy or inc.status in STOP:
            return
        self._busy.add(inc.target)
        task = asyncio.get_running_loop().create_task(self._heal(inc.id, inc.target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _heal(self, incident_id: int, target_text: str) -> None:
        try:
            target = Target.parse(target_text)
            while (wait := await self._step(incident_id, target)) is not None:
                await self.deps.sleep(min(max(wait, 0.05), MAX_WAIT_S))
        except OpsMedicError as exc:  # recorded on the incident already
            logger.info("auto-heal of %s stopped: %s", target_text, exc)
        except Exception:
            logger.exception("auto-heal of %s failed; the reconciler will look again", target_text)
        finally:
            self._busy.discard(target_text)

    async def _step(self, incident_id: int, target: Target) -> float | None:
        """One look: None when done (healed, handed to a person, held), else seconds to wait."""
        inc = await self.deps.store.get_incident(incident_id)
        if inc is None or inc.status in STOP:
            return None
        driver = self.actions.drivers.of(target)
        state = await driver.state(target.name)
        if not state.exists:
            gone = f"{target} no longer exists; nothing to heal"
            await self.incidents.transition(incident_id, IncidentStatus.resolved, gone)
            return None
        if state.restarting:
            return SELF_HEAL_WAIT_S  # its own restart policy is bringing it back
        if state.fine and not is_down_symptom(inc.symptom):
            return None  # up and not unhealthy: this incident (an alert...) is for a person
        # the detector names the remedy when a restart is the wrong one (a bad update)
        action = "rollback" if inc.detail.get("remedy") == "rollback" else "restart"
        decision = await self.actions.decide(target, action=action)
        if not decision.allowed and decision.rule in ("mode", "scope"):
            return None  # not ours to heal: the incident stays for a person
        try:
            reason = f"auto: {inc.symptom} ({inc.title})"[:480]
            result = await self.actions.run(
                action, target, reason, incident_id, "opsmedic", decision=decision
            )
        except Refused as refusal:
            if refusal.data.get("rule") == "hold":
                return None  # the reconcile pass looks again once the hold has expired
            if refusal.data.get("escalate") or not refusal.data.get("wait_s"):
                return None
            return float(str(refusal.data.get("wait_s") or LEASE_TTL_S))
        if result.get("ok") or result.get("status") == "awaiting_approval":
            return None
        return 0.0  # verification failed: ask policy again (backoff decides the wait)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
