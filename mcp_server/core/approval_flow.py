"""People in the loop: ask approvers by email, read their replies, act exactly once.

ask():      policy says "needs approval" -> one signed token per approver, a mail with the
            exact action (Reply-To carries the token), incident -> awaiting_approval.
on_reply(): called by the IMAP watcher for each new mail. Auto-replies are ignored; a
            decision is checked by the ApprovalDesk (forged, expired, reused, wrong incident,
            action changed, not an approver, decision only in quoted text: all rejected and
            audited); approve -> re-check the target, run exactly the approved action once,
            report in the thread; deny -> escalate; no decision -> a note on the incident.
expire():   pending requests past their time -> incident escalated, nothing runs.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from mcp_server.backends.mail.compose import incident_from_thread
from mcp_server.backends.mail.parse import ParsedReply, inbound_record, message_key, parse_reply
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError
from mcp_server.models import IncidentStatus
from mcp_server.safety.approvals import (
    ApprovalDesk,
    ApprovalTokens,
    action_hash,
    reply_to_address,
    token_message_id,
)
from mcp_server.safety.policy import Decision
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)

SECRET_FILE = "approval.key"


def approval_secret(settings: Settings) -> bytes:
    """OPSMEDIC_SECRET, or a random key kept (0600) under the data dir across restarts."""
    if settings.secret is not None:
        return settings.secret.get_secret_value().encode()
    path = Path(settings.data_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


class ApprovalFlow:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        s = deps.settings
        self.desk = ApprovalDesk(deps.store, ApprovalTokens(approval_secret(s)), s.approvers)
        self.mailbox = s.imap.username or s.smtp.from_
        self.domain = self.mailbox.rpartition("@")[2] or "localhost"

    # --- asking --------------------------------------------------------------------------

    async def current_action(self, target: str) -> tuple[dict[str, Any], str]:
        """The exact action that would run now, and its hash. The driver's identity changes
        when the target is recreated, so an approval for the old one no longer matches."""
        parsed = Target.parse(target)
        identity = await self.deps.services.drivers.of(parsed).identity(parsed.name)
        args: dict[str, Any] = {"target": target, "identity": identity}
        return args, action_hash("restart", args, target)

    async def ask(self, incident_id: int | None, target: str, reason: str, decision: Decision):
        """Send the approval request mails; raises OpsMedicError when nobody can be asked."""
        if not self.desk.approvers:
            raise OpsMedicError(
                "this action needs a person's approval but OPSMEDIC_APPROVERS is empty; "
                "set it, or remove the action from OPSMEDIC_POLICY__APPROVE"
            )
        args, _ = await self.current_action(target)
        rca = await self.deps.store.get_rca(incident_id) if incident_id else None
        issued = await self.desk.request_all(incident_id, "restart", args, target)
        outbox = self.deps.services.outbox
        for token, approval in issued:
            text = _request_text(target, reason, rca.summary if rca else None, approval.expires_at)
            headers = {
                "Reply-To": reply_to_address(self.mailbox, token),
                "References": token_message_id(token, self.domain),
            }
            subject = f"[OPSMEDIC-{incident_id}] approve restart of {target}?"
            await outbox.enqueue([approval.approver], subject, text, incident_id=incident_id,
                                 headers=headers, key=f"approval:{approval.id}")  # fmt: skip
        outbox.wake()
        if incident_id is not None:
            ids = [a.id for _, a in issued]
            await self.deps.store.update_incident(incident_id, detail={"approval_ids": ids})
            who = ", ".join(a.approver for _, a in issued)
            await self.deps.services.incidents.transition(
                incident_id, IncidentStatus.awaiting_approval, f"asked {who} to approve a restart"
            )
        return [a for _, a in issued]

    # --- replies -------------------------------------------------------------------------

    async def on_reply(self, uid: int | None, raw: bytes) -> None:
        reply = parse_reply(raw)
        outcome = await self._handle(reply)
        record = inbound_record(message_key(raw), uid, raw)
        record.incident_id = reply.incident_id
        record.headers.update({k: str(v) for k, v in outcome.items() if v is not None})
        record.body_text = reply.note_text[:2000]
        await self.deps.store.enqueue_message(record)

    async def _handle(self, reply: ParsedReply) -> dict[str, Any]:
        if reply.incident_id is None:
            reply.incident_id = incident_from_thread(" ".join(reply.references), self.domain)
        base = {"from": reply.from_addr, "incident": reply.incident_id}
        if reply.is_auto_reply:
            return {**base, "verdict": "ignored", "reason": reply.auto_reply_reason}
        if reply.decision is None:
            # what the person wrote is kept either way (seed 000: "resume with developer input")
            if reply.incident_id is not None and reply.note_text:
                await self.deps.services.incidents.note(
                    reply.incident_id,
                    "reply",
                    f"{reply.from_addr}: {reply.note_text[:1500]}",
                    actor=reply.from_addr or "email",
                )
            if reply.decision_only_in_quote:  # APPROVE/DENY only inside the quoted request
                await self._audit(reply, "rejected", "decision_only_in_quote")
                return {**base, "verdict": "rejected", "reason": "decision_only_in_quote"}
            return {**base, "verdict": "note"}
        return await self._decide(reply, base)

    async def _decide(self, reply: ParsedReply, base: dict[str, Any]) -> dict[str, Any]:
        approval = await self.deps.store.get_approval((reply.token or "")[:16])
        target = (approval.action.get("target") if approval else None) or ""
        try:
            _, current = await self.current_action(target) if target else ({}, "")
        except OpsMedicError:  # the target is gone: nothing can match the request any more
            current = "gone"
        outcome = await self.desk.decide(
            reply.token or "", str(reply.decision), reply.from_addr, current,
            incident_id=reply.incident_id, via="email",
        )  # fmt: skip
        verdict = outcome.status
        await self._audit(reply, verdict, outcome.reason, target)
        result = {**base, "verdict": verdict, "reason": outcome.reason, "decision": reply.decision}
        if outcome.status == "approved" and approval is not None:
            await self._run_approved(approval.incident_id, target, reply.from_addr)
        elif outcome.status == "denied" and approval is not None and approval.incident_id:
            await self.deps.services.incidents.transition(
                approval.incident_id, IncidentStatus.escalated,
                f"{reply.from_addr} denied the restart; nothing was run", actor=reply.from_addr,
            )  # fmt: skip
            await self._report(approval.incident_id, f"Denied by {reply.from_addr}: nothing ran.")
        return result

    async def _run_approved(self, incident_id: int | None, target: str, approver: str) -> None:
        healer = self.deps.services.actions
        if await healer.is_healthy(target):
            text = f"approved by {approver}, but {target} recovered meanwhile: nothing was done"
            if incident_id is not None:
                await self.deps.services.incidents.transition(
                    incident_id, IncidentStatus.resolved, text, actor=approver
                )
            await self._report(incident_id, text[0].upper() + text[1:] + ".")
            return
        try:
            result = await healer.restart(
                target, f"approved by {approver}", incident_id, actor=approver, approved=True
            )
            text = f"Restarted {target} as approved by {approver}: {result['verified']}."
        except OpsMedicError as exc:
            text = f"Approved by {approver}, but the restart did not run: {exc}"
        await self._report(incident_id, text)

    async def _report(self, incident_id: int | None, text: str) -> None:
        to = sorted(self.desk.approvers | set(self.deps.settings.notify.to))
        if incident_id is None or not to:
            return
        subject = f"[OPSMEDIC-{incident_id}] {text[:80]}"
        await self.deps.services.outbox.enqueue(to, subject, text, incident_id=incident_id)
        self.deps.services.outbox.wake()

    async def _audit(
        self, reply: ParsedReply, verdict: str, reason: str | None, target: str = ""
    ) -> None:
        await self.deps.auditor.record(
            actor=reply.from_addr or "unknown", transport="email", tool="approval:reply",
            args={"decision": reply.decision, "message_id": reply.message_id, "reason": reason},
            target=target or None, decision=verdict, outcome=verdict,
            incident_id=reply.incident_id,
        )  # fmt: skip

    # --- expiry and the dashboard ----------------------------------------------------------

    async def expire(self) -> int:
        """Escalate incidents whose every pending approval has expired."""
        count = 0
        waiting = await self.deps.store.list_incidents([IncidentStatus.awaiting_approval], 200)
        for inc in waiting:
            found = [
                await self.deps.store.get_approval(i) for i in inc.detail.get("approval_ids", [])
            ]
            approvals = [a for a in found if a is not None]
            await self.desk.expire_due(approvals)
            fresh = [await self.deps.store.get_approval(a.id) for a in approvals]
            if fresh and all(a is not None and a.status == "expired" for a in fresh):
                await self.deps.services.incidents.transition(
                    inc.id, IncidentStatus.escalated, "approval request expired; nothing ran"
                )
                count += 1
        return count

    async def decide_from_dashboard(
        self, approval_id: str, decision: str, actor: str
    ) -> dict[str, Any]:
        """An authenticated operator's decision on the dashboard (bound to the approver)."""
        approval = await self.deps.store.get_approval(approval_id)
        if approval is None:
            return {"ok": False, "message": f"no approval {approval_id!r}"}
        target = str(approval.action.get("target", ""))
        _, current = await self.current_action(target)
        outcome = await self.desk.decide(
            approval_id, decision, approval.approver, current, approval.incident_id,
            via="dashboard",
        )  # fmt: skip
        await self.deps.auditor.record(
            actor=actor, transport="http", tool="approval:dashboard", args={"decision": decision},
            target=target, decision=outcome.status, outcome=outcome.status,
            incident_id=approval.incident_id,
        )  # fmt: skip
        if outcome.status == "approved":
            await self._run_approved(approval.incident_id, target, actor)
        elif outcome.status == "denied" and approval.incident_id:
            await self.deps.services.incidents.transition(
                approval.incident_id, IncidentStatus.escalated, f"{actor} denied the restart"
            )
        return {"ok": outcome.ok, "status": outcome.status, "message": outcome.message}


def _request_text(target: str, reason: str, rca: str | None, expires: Any) -> str:
    return "\n".join(
        [
            "OpsMedic asks for your approval to run exactly this action:",
            "",
            f"  action:  restart {target}",
            f"  reason:  {reason}",
            f"  RCA:     {rca or 'not recorded yet'}",
            f"  expires: {expires:%Y-%m-%d %H:%M} UTC",
            "",
            "Reply with one word on the first line of your answer:",
            "APPROVE  to run exactly this action once",
            "DENY     to refuse it (the incident is escalated to a person)",
            "",
            "Keep this mail's Reply-To address: it carries a one-time signed token.",
            "Nothing runs without a valid reply from you.",
        ]
    )
