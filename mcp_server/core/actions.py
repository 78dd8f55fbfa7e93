"""Every destructive action goes through one pipeline whose truth is in the store:

    plan -> policy -> lease (renewed, expiring) -> audit(start) -> record -> act -> verify
         -> audit(outcome) -> incident status

The action record is a `Run` of kind "action" (state, attempt, holder, deadline, incident).
Budgets, backoff, the global cap and in-flight actions are computed from those records, so
several OpsMedic processes on one store share one budget. A holder that dies loses its lease
when it expires; the reconciler then resumes or abandons what it left (core.reconcile).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from mcp_server.core.action_lease import action_event, action_lease
from mcp_server.core.incidents import Incidents
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.drivers import Drivers
from mcp_server.errors import InvalidInput, Refused
from mcp_server.models import CLOSED_STATUSES, IncidentStatus, Run, utcnow
from mcp_server.safety.ledger import HOUR_S, RestartLedger
from mcp_server.safety.policy import Decision, Policy

logger = logging.getLogger(__name__)

LIVE = ("started", "verifying")  # action states that are in flight (until their deadline)
ACT_MARGIN_S = 30.0  # time allowed for the act itself, beyond verification
SELF_HEAL_WAIT_S = 2.0  # look again this soon while a target's own restart policy acts


#: Symptoms that "it runs (and is not unhealthy)" answers: a target found fine closes such an
#: incident. Others (an alert, a job's failed run) are not answered by "it runs".
DOWN_SYMPTOMS = frozenset(
    {"died", "stopped", "down", "oom", "exited", "restart_loop", "unhealthy"}
    | {"task_failures", "replicas_low", "update_failed", "node_down"}  # swarm services, nodes
)


PAST = {"restart": "restarted", "rollback": "rolled back"}


def is_down_symptom(symptom: str) -> bool:
    return symptom in DOWN_SYMPTOMS


def in_flight(run: Run, now: float) -> bool:
    """An action record still running: started or verifying, and before its deadline."""
    return run.status in LIVE and float(run.detail.get("deadline", 0)) > now


def action_deadline_s(policy: Policy) -> float:
    s = policy.settings.policy
    return ACT_MARGIN_S + s.verify_timeout_s + s.verify_stable_s


def ledger_from(runs: list[Run], now: float) -> RestartLedger:
    """Replay action records (oldest first) into the pure ledger the policy reads."""
    ledger = RestartLedger()
    for run in runs:
        started = run.started_at.timestamp()
        ledger.record_start(run.subject, started)
        if in_flight(run, now):
            continue
        ended = run.finished_at.timestamp() if run.finished_at else started
        ok = run.status == "ok"
        ledger.record_result(run.subject, ok, ended)
        if ok:
            ledger.mark_healthy(run.subject, ended)
    return ledger


class Actions:
    def __init__(self, deps: Deps, policy: Policy, drivers: Drivers, incidents: Incidents):
        self.deps = deps
        self.policy = policy
        self.drivers = drivers
        self.incidents = incidents
        self.holder = deps.holder
        #: Targets this process is acting on now (the reconciler never takes these over).
        self.mine: set[str] = set()

    # --- deciding ----------------------------------------------------------------------

    async def ledger(self) -> RestartLedger:
        now = self.deps.clock()
        b = self.policy.budget
        horizon = max(b.window_s, HOUR_S, b.healthy_reset_s) + action_deadline_s(self.policy)
        since = datetime.fromtimestamp(now - horizon, UTC)
        return ledger_from(await self.deps.store.list_actions(since), now)

    async def decide(
        self, target: Target, approved: bool = False, action: str = "restart"
    ) -> Decision:
        """What policy says about `action` (restart, rollback) on `target` now, from the
        store's records. A driver that cannot do the action refuses here, clearly."""
        driver = self.drivers.of(target)
        if not driver.restartable or not callable(getattr(driver, action, None)):
            able = sorted(d.kind for d in self.drivers if callable(getattr(d, action, None)))
            raise InvalidInput(f"{target} cannot be {PAST.get(action, action)}; kinds that "
                               f"can: {', '.join(able) or 'none in this server'}")  # fmt: skip
        labels = await driver.labels(target.name)
        ledger = await self.ledger()
        return self.policy.check(
            action, str(target), labels, self.deps.clock(), ledger, approved=approved
        )

    # --- acting ------------------------------------------------------------------------

    async def is_healthy(self, target: Target | str) -> bool:
        """Is the target up (and healthy, if it has a health check) right now?"""
        target = Target.parse(target) if isinstance(target, str) else target
        return (await self.drivers.of(target).state(target.name)).fine

    async def restart(
        self,
        target: Target | str,
        reason: str,
        incident_id: int | None = None,
        actor: str = "opsmedic",
        approved: bool = False,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        """Restart if policy allows; verify; record. Raises Refused (with data) if not."""
        return await self.run("restart", target, reason, incident_id, actor, approved, decision)

    async def rollback(
        self,
        target: Target | str,
        reason: str,
        incident_id: int | None = None,
        actor: str = "opsmedic",
        approved: bool = False,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        """Roll back to the previous spec (drivers with `rollback`): the restart pipeline."""
        return await self.run("rollback", target, reason, incident_id, actor, approved, decision)

    async def run(
        self,
        action: str,
        target: Target | str,
        reason: str,
        incident_id: int | None = None,
        actor: str = "opsmedic",
        approved: bool = False,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        """One destructive action on a target (the driver's method of that name) through
        policy, approval, lease, audit, record and verification."""
        target = Target.parse(target) if isinstance(target, str) else target
        await self._check_incident(target, incident_id)
        await self._refuse_if_held(target, incident_id, actor)
        decision = decision or await self.decide(target, approved=approved, action=action)
        audit = {"actor": actor, "target": str(target), "incident_id": incident_id}
        asking = not decision.allowed and decision.needs_approval and not approved
        if asking and action == "restart":  # approval by email exists for restarts
            return await self._ask_approval(target, reason, incident_id, decision, audit)
        if not decision.allowed:
            await self._refuse(decision, audit, reason, incident_id, actor)
        async with self._lease(target):
            decision = await self.decide(target, approved, action)  # the truth under the lease
            if not decision.allowed:
                await self._refuse(decision, audit, reason, incident_id, actor)
            if incident_id is not None:
                already = await self._already_fine(target, incident_id, actor, action)
                if already is not None:
                    return already
            return await self._act(target, reason, incident_id, actor, decision, audit)

    async def _check_incident(self, target: Target, incident_id: int | None) -> None:
        if incident_id is None:
            return
        inc = await self.deps.store.get_incident(incident_id)
        if inc is None:
            raise InvalidInput(f"no incident {incident_id}; call list_incidents for ids")
        if inc.target != str(target):
            raise InvalidInput(
                f"incident {incident_id} is about {inc.target}, not {target}; pass that "
                "incident's own target, or leave incident_id out"
            )

    async def _refuse_if_held(self, target: Target, incident_id: int | None, actor: str) -> None:
        """A person put the target on hold: watched, never acted on, whoever asks."""
        holds = self.deps.services.holds
        if holds is None:
            return
        hold = await holds.active(target, await self.drivers.of(target).labels(target.name))
        if hold is None:
            return
        until = hold.until.astimezone(UTC).isoformat() if hold.until else None
        text = (f"{target} is on hold ({hold.reason}) until {until or 'its label is removed'}: "
                "watched, not healed")  # fmt: skip
        if incident_id is not None:
            inc = await self.deps.store.get_incident(incident_id)
            if inc is not None and not inc.detail.get("held"):
                await self.deps.store.update_incident(incident_id, detail={"held": True})
                await self.incidents.note(incident_id, "held", text, actor)
        wait = max(0.0, hold.until.timestamp() - self.deps.clock()) if hold.until else 0.0
        raise Refused(
            text,
            {
                "refused": True,
                "rule": "hold",
                "target": str(target),
                "wait_s": round(wait, 3),
                "retry_at": until,
                "escalate": False,
                "remedy": f"opsmedic release {target} (or wait for the hold to end)",
            },
        )

    async def _already_fine(
        self, target: Target, incident_id: int, actor: str, action: str = "restart"
    ) -> dict[str, Any] | None:
        """An incident-bound restart of a target that is up again does nothing."""
        inc = await self.deps.store.get_incident(incident_id)
        state = await self.drivers.of(target).state(target.name)
        if inc is not None and inc.status in CLOSED_STATUSES:
            why = f"incident {incident_id} is already {inc.status.value}"
        elif state.restarting and action == "restart":  # its own supervisor acts first
            raise Refused(
                f"{target} is being restarted by its own restart policy; look again shortly.",
                {"refused": True, "rule": "self_healing", "target": str(target),
                 "wait_s": SELF_HEAL_WAIT_S, "escalate": False,
                 "retry_at": (utcnow() + timedelta(seconds=SELF_HEAL_WAIT_S)).isoformat(),
                 "remedy": "nothing: Docker is bringing it back"},
            )  # fmt: skip
        elif state.fine and inc is not None and not is_down_symptom(inc.symptom):
            why = f"{target} is running; incident {incident_id} ({inc.symptom}) is for a person"
        elif state.fine:
            why = f"{target} is running again ({state.detail})"
            await self.incidents.transition(
                incident_id, IncidentStatus.resolved, f"{why}; nothing restarted", actor
            )
        else:
            return None
        return {"target": str(target), "action": action, "ok": True, "restarted": False,
                "status": "already_fine", "note": f"{why}; nothing ran",
                "incident_id": incident_id}  # fmt: skip

    async def _act(
        self,
        target: Target,
        reason: str,
        incident_id: int | None,
        actor: str,
        decision: Decision,
        audit: dict[str, Any],
    ) -> dict[str, Any]:
        driver, action = self.drivers.of(target), decision.action
        now = self.deps.clock()
        run = Run(
            id=f"action-{uuid.uuid4().hex[:12]}",
            kind="action",
            subject=str(target),
            status="started",
            started_at=datetime.fromtimestamp(now, UTC),
            detail={
                "action": action,
                "holder": self.holder,
                "incident_id": incident_id,
                "deadline": now + action_deadline_s(self.policy),
                "reason": reason[:300],
                "actor": actor,
            },
        )
        # Audited before acting: if this write fails, the exception stops the restart.
        await self._audit(audit, decision, "started", {"reason": reason, "run": run.id})
        await self.deps.store.put_run(run)
        self.mine.add(str(target))
        try:
            await self._step(incident_id, IncidentStatus.healing, f"{action} ({reason})", actor)
            await getattr(driver, action)(target.name)
            run.detail["acted_at"] = self.deps.clock()  # engine events after this are not ours
            await self._save(run, "verifying")
            await self._step(incident_id, IncidentStatus.verifying, "checking it stays up", actor)
            ok, detail = await driver.verify(target.name)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._failed(run, target, incident_id, actor, decision, audit, exc)
            raise
        finally:
            self.mine.discard(str(target))
        with anyio.CancelScope(shield=True):
            await self._finish(run, ok, detail)
            await self._audit(audit, decision, "ok" if ok else "failed", {"verified": detail})
            status = IncidentStatus.resolved if ok else IncidentStatus.open
            said = f"verified: {detail}" if ok else f"verify failed: {detail}"
            await self._step(incident_id, status, said, actor)
            await self.deps.bus.publish([action_event(run, incident_id, ok, detail)])
        restarts = len((await self.ledger()).history(str(target)))
        return {"target": str(target), "action": action, "ok": ok, "restarted": True,
                "verified": detail, "incident_id": incident_id, "decision": decision.verdict,
                "run_id": run.id, "restarts_in_window": restarts}  # fmt: skip

    async def _failed(
        self,
        run: Run,
        target: Target,
        incident_id: int | None,
        actor: str,
        decision: Decision,
        audit: dict[str, Any],
        exc: BaseException,
    ) -> None:
        """Every exit path closes the record: the in-flight slot is never leaked."""
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        text = "interrupted (OpsMedic stopping)" if cancelled else f"failed: {exc}"[:300]
        try:
            await self._finish(run, False, text, status="interrupted" if cancelled else "failed")
            await self._audit(audit, decision, "error", {"error": text})
            await self._step(incident_id, IncidentStatus.open, f"{decision.action} {text}", actor)
        except Exception:  # the store itself may be what failed; the reconciler will see it
            logger.exception("could not record the end of action %s on %s", run.id, target)

    async def _refuse(
        self,
        decision: Decision,
        audit: dict[str, Any],
        reason: str,
        incident_id: int | None,
        actor: str,
    ) -> None:
        args = {"reason": reason, "why": decision.reason, "rule": decision.rule}
        await self._audit(audit, decision, "refused", args)
        if incident_id is not None:
            if decision.escalate:
                await self.incidents.transition(
                    incident_id, IncidentStatus.escalated, decision.message(), actor
                )
            elif decision.rule != "concurrency":
                await self.incidents.note(incident_id, "refused", decision.message(), actor)
        raise decision.refusal(self.deps.clock())

    def _lease(self, target: Target) -> contextlib.AbstractAsyncContextManager[None]:
        return action_lease(self.deps.store, self.holder, target)

    # --- approvals -----------------------------------------------------------------------

    async def _ask_approval(
        self,
        target: Target,
        reason: str,
        incident_id: int | None,
        decision: Decision,
        audit: dict[str, Any],
    ) -> dict[str, Any]:
        """Policy wants a person's yes: mail the approvers; nothing runs until one replies."""
        flow = self.deps.services.approvals
        if flow is None:
            raise decision.refusal(self.deps.clock())
        out: dict[str, Any] = {"target": str(target), "action": "restart", "ok": False}
        out.update(status="awaiting_approval", incident_id=incident_id)
        if incident_id is not None:
            inc = await self.deps.store.get_incident(incident_id)
            if inc is not None and inc.status == IncidentStatus.awaiting_approval:
                return {**out, "note": "already waiting for a person's reply; nothing ran"}
        asked = await flow.ask(incident_id, str(target), reason, decision)
        await self._audit(audit, decision, "awaiting_approval", {"reason": reason})
        return {
            **out,
            "asked": [a.approver for a in asked],
            "note": "nothing ran: an approver must reply APPROVE to the email",
        }

    # --- records -------------------------------------------------------------------------

    async def _save(self, run: Run, status: str) -> None:
        run.status = status
        await self.deps.store.put_run(run)

    async def _finish(self, run: Run, ok: bool, detail: str, status: str | None = None) -> None:
        run.status = status or ("ok" if ok else "failed")
        run.finished_at = utcnow()
        run.detail = {**run.detail, "result": detail[:300]}
        await self.deps.store.put_run(run)

    async def _audit(
        self, base: dict[str, Any], decision: Decision, outcome: str, args: dict[str, Any]
    ) -> None:
        await self.deps.auditor.record(
            **base,
            transport="internal",
            tool=f"action:{decision.action}",
            args=args,
            decision=decision.verdict,
            outcome=outcome,
        )

    async def _step(
        self, incident_id: int | None, status: IncidentStatus, text: str, actor: str
    ) -> None:
        if incident_id is not None:
            await self.incidents.transition(incident_id, status, text, actor)
