"""Restarts under policy: check -> lease -> act -> verify -> record, every step on the incident.

The policy is pure (mcp_server.safety.policy); this module does the I/O around it. A restart
that policy refuses never touches the target; an exhausted budget escalates the incident.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from mcp_server.deps import Deps
from mcp_server.errors import Conflict, InvalidInput, NotFound, Refused, Unavailable
from mcp_server.incidents import Incidents
from mcp_server.models import Event, IncidentStatus, Run, utcnow
from mcp_server.safety.policy import Decision, Policy, RestartLedger, split_target

logger = logging.getLogger(__name__)

RESTARTABLE = ("container", "process", "job")
LEASE_TTL_S = 120.0
SEED_AUDIT_ENTRIES = 2000  # how far back a starting server looks for earlier restarts


class Healer:
    def __init__(self, deps: Deps, policy: Policy, ledger: RestartLedger, incidents: Incidents):
        self.deps = deps
        self.policy = policy
        self.ledger = ledger
        self.incidents = incidents
        self.holder = deps.holder
        self._seeded = False

    async def decide(self, target: str, approved: bool = False) -> Decision:
        """What policy says about restarting target right now (no side effects)."""
        await self._seed_ledger()
        kind, name = split_target(target)
        if kind not in RESTARTABLE:
            raise InvalidInput(
                f"cannot restart {target!r}: restart works on container:NAME and process:NAME"
            )
        labels = await self._labels(kind, name)
        return self.policy.check(
            "restart", target, labels, self.deps.clock(), self.ledger, approved=approved
        )

    async def restart(
        self,
        target: str,
        reason: str,
        incident_id: int | None = None,
        actor: str = "opsmedic",
        approved: bool = False,
        decision: Decision | None = None,
    ) -> dict[str, Any]:
        """Restart if policy allows; verify; record. Raises Refused with the remedy if not.
        `decision`: one just made by decide() for this target, to avoid asking twice."""
        decision = decision or await self.decide(target, approved=approved)
        audit = {"actor": actor, "target": target, "incident_id": incident_id}
        if not decision.allowed and decision.needs_approval and not approved:
            return await self._ask_approval(target, reason, incident_id, decision, audit)
        if not decision.allowed:
            await self._audit(
                audit, decision, "refused", {"reason": reason, "why": decision.reason}
            )
            await self._refused(decision, incident_id, actor)
            raise Refused(decision.message())
        lease = f"action:{target}"
        if not await self.deps.store.acquire_lease(lease, self.holder, LEASE_TTL_S, utcnow()):
            raise Conflict(f"another OpsMedic is already acting on {target}; check its incident")
        try:
            # Audited before acting: if this write fails, the exception stops the restart.
            await self._audit(audit, decision, "started", {"reason": reason})
            result = await self._do_restart(target, reason, incident_id, actor, decision)
            await self._audit(audit, decision, "ok" if result["ok"] else "failed", result)
            return result
        except Exception as exc:
            await self._audit(audit, decision, "error", {"error": str(exc)[:300]})
            raise
        finally:
            await self.deps.store.release_lease(lease, self.holder)

    async def _seed_ledger(self) -> None:
        """Once per server: earlier restarts in the audit log count against the budgets, so
        restarting OpsMedic does not hand a crash-looping target a fresh budget."""
        if self._seeded:
            return
        self._seeded = True
        horizon = self.deps.clock() - self.policy.budget.window_s * 4
        starts: dict[str, list[float]] = {}
        for entry in await self.deps.store.recent_audit(SEED_AUDIT_ENTRIES):
            at = entry.ts.timestamp()
            if entry.tool == "action:restart" and entry.outcome == "started" and at > horizon:
                starts.setdefault(entry.target or "", []).append(at)
        for target, times in starts.items():
            if target:
                self.ledger.seed(target, times)

    async def _ask_approval(
        self,
        target: str,
        reason: str,
        incident_id: int | None,
        decision: Decision,
        audit: dict[str, Any],
    ) -> dict[str, Any]:
        """Policy wants a person's yes: mail the approvers; nothing runs until one replies."""
        flow = self.deps.extras.get("approvals")
        if flow is None:
            raise Refused(decision.message())
        out: dict[str, Any] = {"target": target, "action": "restart", "ok": False}
        out.update(status="awaiting_approval", incident_id=incident_id)
        if incident_id is not None:
            inc = await self.deps.store.get_incident(incident_id)
            if inc is not None and inc.status == IncidentStatus.awaiting_approval:
                return {**out, "note": "already waiting for a person's reply; nothing ran"}
        asked = await flow.ask(incident_id, target, reason, decision)
        await self._audit(audit, decision, "awaiting_approval", {"reason": reason})
        return {
            **out,
            "asked": [a.approver for a in asked],
            "note": "nothing ran: an approver must reply APPROVE to the email",
        }

    async def is_healthy(self, target: str) -> bool:
        """Is the target up (and healthy, if it has a health check) right now?"""
        kind, name = split_target(target)
        if kind == "container":
            state = await self._docker().container_state(name)
            return bool(state.running and (state.health in (None, "healthy")))
        if kind == "process":
            return bool(self._supervisor().status(name).running)
        job = await self.deps.store.get_job(name)
        return job is not None and job.status in ("running", "ok")

    async def _audit(
        self, base: dict[str, Any], decision: Decision, outcome: str, args: dict[str, Any]
    ) -> None:
        await self.deps.auditor.record(
            **base,
            transport="internal",
            tool="action:restart",
            args=args,
            decision=decision.verdict,
            outcome=outcome,
        )

    async def _do_restart(
        self, target: str, reason: str, incident_id: int | None, actor: str, decision: Decision
    ) -> dict[str, Any]:
        kind, name = split_target(target)
        started = self.deps.clock()
        self.ledger.record_start(target, started)
        run = Run(id=f"action-{target}-{started:.6f}", kind="action", subject=target)
        await self._step(incident_id, IncidentStatus.healing, f"restarting ({reason})", actor)
        try:
            await self._perform(kind, name)
        except Exception as exc:
            self.ledger.record_result(target, False, self.deps.clock())
            await self._finish_run(run, "failed", f"restart failed: {exc}")
            await self._step(incident_id, IncidentStatus.open, f"restart failed: {exc}", actor)
            raise
        await self._step(incident_id, IncidentStatus.verifying, "checking it stays up", actor)
        ok, detail = await self._verify(kind, name)
        now = self.deps.clock()
        self.ledger.record_result(target, ok, now)
        if ok:
            self.ledger.mark_healthy(target, now)
            await self._step(incident_id, IncidentStatus.resolved, f"verified: {detail}", actor)
        else:
            await self._step(incident_id, IncidentStatus.open, f"verify failed: {detail}", actor)
        await self._finish_run(run, "ok" if ok else "failed", detail)
        await self.deps.bus.publish([_action_event(target, incident_id, ok, detail, run.id)])
        return {
            "target": target,
            "action": "restart",
            "ok": ok,
            "verified": detail,
            "incident_id": incident_id,
            "decision": decision.verdict,
            "restarts_in_window": len(self.ledger.history(target)),
        }

    async def _perform(self, kind: str, name: str) -> None:
        if kind == "container":
            await self._docker().restart(name, timeout_s=10)
        elif kind == "job":
            restarter = self.deps.extras.get("restarter")
            if restarter is None:
                raise Unavailable(
                    "no way to restart jobs: set OPSMEDIC_INGEST__URL (hub) or __WEBHOOK_URL"
                )
            await restarter.restart(name, "requested by OpsMedic")
        else:
            await self._supervisor().restart(name)

    async def _verify(self, kind: str, name: str) -> tuple[bool, str]:
        pol = self.deps.settings.policy
        if kind == "container":
            docker = self._docker()
            state = await docker.container_state(name)
            return await docker.wait_running(
                name,
                timeout_s=pol.verify_timeout_s,
                need_healthy=state.health is not None,
                stable_s=pol.verify_stable_s,
            )
        if kind == "job":
            return await self._verify_job(name, pol.verify_timeout_s)
        return await self._verify_process(name, pol.verify_stable_s)

    async def _verify_job(self, job_id: str, timeout_s: float) -> tuple[bool, str]:
        """A restarted job is back when the hub reports a new run or a heartbeat for it."""
        await self.deps.extras["jobs"].flush()
        before = await self.deps.store.get_job(job_id)
        seen = (before.last_run_id, before.last_heartbeat) if before else (None, None)
        with anyio.move_on_after(timeout_s):
            while True:
                await anyio.sleep(0.2)
                await self.deps.extras["jobs"].flush()
                job = await self.deps.store.get_job(job_id)
                if job and (job.last_run_id, job.last_heartbeat) != seen and job.status != "failed":
                    return True, f"job reports {job.status} (run {job.last_run_id})"
        return False, f"no new run or heartbeat from job {job_id} within {timeout_s:g}s"

    async def _verify_process(self, name: str, stable_s: float) -> tuple[bool, str]:
        await anyio.sleep(stable_s)
        status = self._supervisor().status(name)
        if status.running:
            return True, f"running as pid {status.pid} for {stable_s:g}s"
        return False, f"exited again (code {status.exit_code}, signal {status.signal})"

    async def _labels(self, kind: str, name: str) -> dict[str, str] | None:
        if kind == "container":
            detail = await self._docker().inspect_container(name)
            return dict(detail.labels)
        if kind == "process":
            self._supervisor().status(name)  # NotFound for an unknown name
        if kind == "job":
            job = await self.deps.store.get_job(name)
            if job is None:
                raise NotFound(f"no job {name!r}; read opsmedic://jobs for ids")
            labels = job.meta.get("labels")
            return dict(labels) if isinstance(labels, dict) else {}
        return None

    async def _refused(self, decision: Decision, incident_id: int | None, actor: str) -> None:
        if incident_id is None:
            return
        if decision.escalate:
            await self.incidents.transition(
                incident_id, IncidentStatus.escalated, decision.message(), actor
            )
        else:
            await self.incidents.note(incident_id, "refused", decision.message(), actor)

    async def _step(
        self, incident_id: int | None, status: IncidentStatus, text: str, actor: str
    ) -> None:
        if incident_id is not None:
            await self.incidents.transition(incident_id, status, text, actor)

    async def _finish_run(self, run: Run, status: str, detail: str) -> None:
        run.status = status
        run.finished_at = utcnow()
        run.detail = {"result": detail}
        await self.deps.store.put_run(run)

    def _docker(self) -> Any:
        docker = self.deps.extras.get("docker")
        if docker is None:
            raise Unavailable("no Docker backend configured in this server")
        return docker

    def _supervisor(self) -> Any:
        sup = self.deps.extras.get("processes")
        if sup is None:
            raise NotFound("no managed processes are configured; add [[processes]] to the config")
        return sup


def _action_event(
    target: str, incident_id: int | None, ok: bool, detail: str, run_id: str
) -> Event:
    return Event(
        id=f"action:{run_id}",
        source="action",
        type="action.restart",
        target=target,
        incident_id=incident_id,
        data={"ok": ok, "detail": detail[:300]},
    )
