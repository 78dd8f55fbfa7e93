"""The unattended runner: an MCP client that triages, diagnoses, heals and reports.

Per incident: triage (rules) -> RCA (LLM when configured, else rules) -> policy decision (by the
server, on `restart`) -> act -> verify (server) -> notify / escalate -> record. Each step lands
on the incident's timeline through the same tools any LLM client has. Event-driven through
`wait_for_events`, plus timer ticks for scheduled monitors and a reconcile pass.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
from fastmcp import Client

from agent_runner.advisor import Advisor
from agent_runner.notify import notify_incident, notify_monitor

logger = logging.getLogger(__name__)

RESTARTABLE = ("container", "process", "job", "service")
RANK = {"ok": 0, "warn": 1, "alert": 2}
LOG_KINDS = ("container", "process", "job", "file", "service")
SKIP = {"escalated", "awaiting_approval"}
ACTING = {"healing", "verifying"}
SETTLE_S = 2.0
# refusals that only mean "someone is already on it": no note, the server sets the status
QUIET_RULES = ("concurrency", "self_healing")
ACTION_TIMEOUT_S = 120.0
EVIDENCE_LINES = 200
#: Incidents diagnosed at once: a slow model answer never holds up the others.
PARALLEL = 4


@dataclass
class PassReport:
    handled: list[int] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)  # what is still wrong after the pass
    monitors: dict[str, str] = field(default_factory=dict)  # name -> verdict

    @property
    def healthy(self) -> bool:
        return not self.unhealthy and "alert" not in self.monitors.values()


class Runner:
    def __init__(
        self,
        client: Client[Any],
        advisor: Advisor,
        mode: Literal["check", "heal"] = "check",
        monitors: dict[str, float] | None = None,
        notify: bool = True,
        clock: Callable[[], float] = time.monotonic,
        parallel: int = PARALLEL,
    ) -> None:
        self.client = client
        self.advisor = advisor
        self.mode = mode
        self.monitors = dict(monitors or {})  # name -> interval_s
        self.notify = notify
        self.clock = clock
        self._handled: dict[int, int] = {}  # incident id -> count when handled
        self._due: dict[str, float] = {}
        self._retry: dict[int, float] = {}  # incident id -> when backoff allows a retry
        self._stopping = anyio.Event()
        self._limit = anyio.CapacityLimiter(parallel)  # incidents handled at once
        self._inflight: set[int] = set()
        self._again: set[int] = set()  # events that came while their incident was in hand

    def stop(self) -> None:
        """Ask the loop to finish: the incident in hand completes, nothing new starts."""
        self._stopping.set()

    # --- tool plumbing -----------------------------------------------------------------

    async def call(self, tool: str, **args: Any) -> tuple[bool, Any]:
        """(ok, structured result or error text); never raises for a tool error."""
        ok, out, _ = await self.call_full(tool, **args)
        return ok, out

    async def call_full(self, tool: str, **args: Any) -> tuple[bool, Any, dict[str, Any]]:
        """(ok, structured result or error text, an error's structured fields)."""
        r = await self.client.call_tool(tool, args, raise_on_error=False)
        if r.is_error:
            text = " ".join(getattr(c, "text", "") for c in r.content) or "error"
            return False, text, dict(r.structured_content or {})
        return True, r.structured_content, {}

    async def note(self, incident_id: int, text: str, status: str | None = None) -> None:
        args: dict[str, Any] = {"incident_id": incident_id, "note": f"runner: {text}"}
        if status:
            args["status"] = status
        ok, err = await self.call("update_incident", **args)
        if not ok:
            logger.warning("could not update incident %s: %s", incident_id, err)

    # --- one incident --------------------------------------------------------------------

    async def handle(self, incident_id: int) -> None:
        ok, inc = await self.call("get_incident", incident_id=incident_id)
        if not ok or inc["status"] in SKIP:
            return
        if self._handled.get(incident_id) == inc["count"]:
            return
        if inc["status"] in ACTING:  # the server is acting: look again once it has settled
            self._retry[incident_id] = self.clock() + SETTLE_S
            return
        claim: dict[str, Any] = {"incident_id": incident_id, "claim": True,
                                 "note": "runner: triage started"}  # fmt: skip
        if inc["status"] != "resolved":
            claim["status"] = "diagnosing"
        claimed, err, refusal = await self.call_full("update_incident", **claim)
        if not claimed:  # another runner has it (or it is gone): never two at once
            logger.info("incident %s not triaged here: %s", incident_id, err)
            wait = refusal.get("wait_s")  # a live claim: look again, its holder may die
            if isinstance(wait, (int, float)):
                self._retry[incident_id] = self.clock() + float(wait)
            return
        self._handled[incident_id] = inc["count"]
        target = inc["target"]
        evidence = await self._evidence(target)
        if target.startswith("container:"):  # the engine's facts: OOMKilled, exit, health log
            ok, detail = await self.call("inspect_container", name=target.partition(":")[2])
            inc = {**inc, "inspect": detail} if ok else inc
        rca = await self.advisor.advise(inc, evidence, self.client)
        ok, err = await self.call("record_rca", incident_id=incident_id, rca=rca)
        if not ok:
            logger.warning("record_rca failed for %s: %s", incident_id, err)
        action = _settled(inc) if inc["status"] == "resolved" else await self._act(inc, rca)
        if self.notify:
            await notify_incident(self, inc, rca, action)

    async def _evidence(self, target: str) -> list[tuple[str, str]]:
        if target.partition(":")[0] not in LOG_KINDS:
            return []
        ok, out = await self.call("tail_logs", source=target, lines=EVIDENCE_LINES)
        if not ok:
            return []
        return [(target, line) for line in str(out.get("lines", "")).splitlines() if line]

    async def _act(self, inc: dict[str, Any], rca: dict[str, Any]) -> str:
        """Decide and act. The server's policy has the last word on every restart."""
        iid, target = inc["id"], inc["target"]
        kind = target.partition(":")[0]
        if kind not in RESTARTABLE:
            await self.note(iid, f"nothing to restart for {kind}; a person should look", "open")
            return "none"
        if not rca.get("restart_safe"):
            why = f"RCA says a restart would not help ({rca.get('category')}): escalating"
            await self.note(iid, why, status="escalated")
            return "escalated"
        if self.mode != "heal":
            await self.note(iid, "check mode: would restart, changed nothing", status="open")
            return "would_restart"
        reason = f"runner: {rca.get('category')}: {str(rca.get('summary', ''))[:200]}"
        with anyio.CancelScope(shield=True), anyio.move_on_after(ACTION_TIMEOUT_S) as scope:
            ok, out, refusal = await self.call_full(
                "restart", target=target, reason=reason, incident_id=iid
            )
        if scope.cancelled_caught:
            await self.note(iid, "restart interrupted: result unknown, check the target", "open")
            return "interrupted"
        if ok and out.get("status") == "awaiting_approval":
            return "awaiting_approval"
        if ok and out.get("status") == "already_fine":
            ok, now = await self.call("get_incident", incident_id=iid)
            return _settled(now) if ok else "recovered"
        if ok:
            return "restarted" if out.get("ok") else "restart_failed"
        wait = refusal.get("wait_s")
        if refusal.get("escalate"):  # the server escalated it: a person has it now
            await self.note(iid, f"restart refused: {out}")
        elif refusal.get("rule") not in QUIET_RULES:  # (else the server sets the status)
            await self.note(iid, f"restart refused: {out}", status="open")
        if isinstance(wait, int | float) and wait > 0 and not refusal.get("escalate"):
            self._retry[iid] = self.clock() + float(wait)  # the server said when
        return "refused"

    # --- passes and the loop -------------------------------------------------------------

    async def run_monitor(self, name: str) -> str:
        ok, out = await self.call("run_monitor", name=name)
        if not ok:
            logger.warning("monitor %s failed: %s", name, out)
            return "error"
        await self._judge(name, out)
        if self.notify:
            await notify_monitor(self, name, out)
        return str(out["verdict"])

    async def _judge(self, name: str, out: dict[str, Any]) -> None:
        """With an LLM and a monitor prompt, the model judges the evidence too. Its verdict
        can raise the rules' verdict, never lower it, and is kept in the audit log."""
        judge = getattr(self.advisor, "judge", None)
        prompt = out.get("prompt")
        if judge is None or not prompt:
            return
        opinion = await judge(prompt, out.get("evidence", []))
        if opinion is None:
            return
        verdict, reason = opinion
        if RANK[verdict] > RANK.get(out["verdict"], 0):
            out["verdict"] = verdict
        out["llm"] = {"verdict": verdict, "reason": reason, "model": self.advisor.name}
        await self.call(
            "write_audit_entry", event=f"monitor:{name}",
            detail=f"{self.advisor.name} judged {verdict}: {reason}",
        )  # fmt: skip

    async def once(self) -> PassReport:
        """One pass: every active incident, every monitor. For `--once` and the demo."""
        report = PassReport()
        ok, out = await self.call("list_incidents", status="active", limit=200)
        for row in out.get("incidents", []) if ok else []:
            await self.handle(row["id"])
            report.handled.append(row["id"])
        for name in self.monitors:
            report.monitors[name] = await self.run_monitor(name)
        ok, out = await self.call("list_incidents", status="active", limit=200)
        report.unhealthy = [f"{r['target']} {r['symptom']}" for r in out.get("incidents", [])]
        return report

    async def run_forever(self, tick_s: float = 5.0) -> None:
        """Follow events; tick monitors; reconcile. A failing step is logged, never fatal."""
        ok, first = await self.call("wait_for_events")
        cursor = first["cursor"] if ok else 0
        await self._guard("startup pass", self.once)
        async with anyio.create_task_group() as tg:
            while not self._stopping.is_set():
                ok, out = await self.call("wait_for_events", cursor=cursor, timeout_s=tick_s)
                if ok:
                    cursor = out["cursor"]
                    for iid in _incident_ids(out["events"]):
                        self._start(tg, iid)
                await self._guard("retry tick", functools.partial(self._tick_retries, tg))
                await self._guard("monitor tick", self._tick_monitors)

    def _start(self, tg: anyio.abc.TaskGroup, iid: int) -> None:
        """Handle `iid` in the background (up to `parallel` at once). An event for an
        incident in hand is not lost: it is handled once more when the current pass ends."""
        if iid in self._inflight:
            self._again.add(iid)
            return
        self._inflight.add(iid)
        tg.start_soon(self._handle_bounded, tg, iid)

    async def _handle_bounded(self, tg: anyio.abc.TaskGroup, iid: int) -> None:
        try:
            async with self._limit:
                await self._guard(f"incident {iid}", functools.partial(self.handle, iid))
        finally:
            self._inflight.discard(iid)
        if iid in self._again and not self._stopping.is_set():
            self._again.discard(iid)
            self._start(tg, iid)

    async def _tick_retries(self, tg: anyio.abc.TaskGroup | None = None) -> None:
        now = self.clock()
        for iid, due in list(self._retry.items()):
            if now >= due and iid not in self._inflight:
                del self._retry[iid]
                self._handled.pop(iid, None)
                if tg is None:
                    await self.handle(iid)
                else:
                    self._start(tg, iid)

    async def _tick_monitors(self) -> None:
        now = self.clock()
        for name, interval in self.monitors.items():
            if now >= self._due.get(name, 0.0):
                self._due[name] = now + interval
                await self.run_monitor(name)

    async def _guard(self, what: str, step: Callable[[], Awaitable[Any]]) -> None:
        try:
            await step()
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            logger.exception("%s failed; the runner goes on", what)


def _incident_ids(events: list[dict[str, Any]]) -> list[int]:
    wanted = ("incident.opened", "incident.repeat")
    seen: list[int] = []
    for e in events:
        iid = e.get("incident_id")
        if e.get("type") in wanted and iid is not None and iid not in seen:
            seen.append(iid)
    return seen


def _settled(inc: dict[str, Any]) -> str:
    """How an incident the server already closed ended: healed by its restart, or by itself."""
    texts = [str(t.get("text", "")) for t in inc.get("timeline", [])]
    return "restarted" if any(t.startswith("resolved: verified") for t in texts) else "recovered"
