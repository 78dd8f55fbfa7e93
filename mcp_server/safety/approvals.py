"""The approval desk: persist requests for one exact action, apply people's decisions once.

`ApprovalDesk.request()` stores a pending Approval and returns the token to mail out;
`ApprovalDesk.decide()` turns a reply (token, approve/deny, sender) into approved, denied or
rejected-with-reason, applying every check (forged/altered, expired, reused, wrong incident,
action changed, sender not an approver). The token format and its security margin are in
`mcp_server.safety.approval_tokens`; its public names are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from mcp_server.errors import InvalidInput
from mcp_server.models import Approval, utcnow
from mcp_server.safety.approval_tokens import (
    APPROVAL_ID_CHARS,
    DEFAULT_TTL_S,
    TOKEN_CHARS,
    TOKEN_MSGID_PREFIX,
    ApprovalTokens,
    RejectReason,
    TokenParts,
    Verdict,
    VerdictReason,
    action_hash,
    explain,
    normalize_address,
    reply_to_address,
    token_from_address,
    token_message_id,
)
from mcp_server.store.base import Store

__all__ = [
    "APPROVAL_ID_CHARS",
    "DEFAULT_TTL_S",
    "TOKEN_CHARS",
    "TOKEN_MSGID_PREFIX",
    "ApprovalDesk",
    "ApprovalTokens",
    "DecisionOutcome",
    "RejectReason",
    "TokenParts",
    "Verdict",
    "VerdictReason",
    "action_hash",
    "explain",
    "normalize_address",
    "reply_to_address",
    "token_from_address",
    "token_message_id",
]

_ID_RE = re.compile(rf"^[a-z2-7]{{{APPROVAL_ID_CHARS}}}$")


# --- the desk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionOutcome:
    """What became of a reply: approved, denied, or rejected with a reason (and why)."""

    status: Literal["approved", "denied", "rejected"]
    reason: RejectReason | None = None
    approval: Approval | None = None

    @property
    def ok(self) -> bool:
        return self.status != "rejected"

    @property
    def message(self) -> str:
        if self.status == "rejected":
            return f"rejected: {explain(self.reason or 'malformed')}"
        who = self.approval.approver if self.approval else "an approver"
        return f"{self.status} by {who}"


_DECISIONS = {"approve": "approved", "approved": "approved", "deny": "denied", "denied": "denied"}


class ApprovalDesk:
    """Create approval requests and apply people's decisions, each at most once.

    ``approvers`` is OPSMEDIC_APPROVERS; ``clock`` returns the current UTC datetime.
    """

    def __init__(
        self,
        store: Store,
        tokens: ApprovalTokens,
        approvers: Sequence[str],
        clock: Callable[[], datetime] = utcnow,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.approvers = frozenset(a for a in map(normalize_address, approvers) if a)
        self.clock = clock
        self.ttl_s = ttl_s

    async def request(
        self, incident_id: int | None, tool: str, args: dict[str, Any], target: str, approver: str
    ) -> tuple[str, Approval]:
        """Persist a pending approval of exactly this action for one approver; return its token."""
        who = normalize_address(approver)
        if who not in self.approvers:
            raise InvalidInput(
                f"{approver!r} is not an approver; add it to OPSMEDIC_APPROVERS or use one of "
                f"{', '.join(sorted(self.approvers)) or '(none configured)'}"
            )
        action = {"tool": tool, "args": args, "target": target}
        token, approval = self.tokens.issue(
            incident_id,
            action_hash(tool, args, target),
            who,
            self.ttl_s,
            now=self.clock(),
            action=action,
        )
        await self.store.put_approval(approval)
        return token, approval

    async def request_all(
        self, incident_id: int | None, tool: str, args: dict[str, Any], target: str
    ) -> list[tuple[str, Approval]]:
        """One request per configured approver (each gets a token bound to their address)."""
        return [
            await self.request(incident_id, tool, args, target, who)
            for who in sorted(self.approvers)
        ]

    async def decide(
        self,
        token_or_approval_id: str,
        decision: str,
        sender: str,
        current_action_hash: str,
        incident_id: int | None = None,
        via: str = "email",
    ) -> DecisionOutcome:
        """Apply ``decision`` (approve/deny) from ``sender`` if every check passes.

        Rejects, never raises, for: a malformed, altered or forged token (bad_mac); an
        expired request (which is then marked expired); a request already decided (reused);
        a token for another incident (wrong_incident); an action that changed since the
        request (action_changed); a sender who is not an approver or not the one the token
        was issued to (not_approver). An approval id instead of a token is accepted only
        when ``via`` is not "email" (in-band elicitation, where the client is authenticated).
        Store failures propagate (Unavailable) so the caller retries later.
        """
        status = _DECISIONS.get((decision or "").strip().lower())
        if status is None:
            return DecisionOutcome("rejected", "bad_decision")
        key = (token_or_approval_id or "").strip().lower()
        who = normalize_address(sender)
        parts = self.tokens.parse(key)
        if parts is not None:
            return await self._decide_token(
                key, parts, status, who, current_action_hash, incident_id, via
            )
        if via != "email" and _ID_RE.match(key):
            return await self._decide_id(key, status, who, current_action_hash, incident_id, via)
        return DecisionOutcome("rejected", "malformed")

    async def _decide_token(
        self,
        token: str,
        parts: TokenParts,
        status: str,
        who: str,
        current_hash: str,
        incident_id: int | None,
        via: str,
    ) -> DecisionOutcome:
        now = self.clock()
        approval = await self.store.get_approval(parts.approval_id)
        if approval is None:
            verdict = self.tokens.verify(token, incident_id, current_hash, who, now)
            # without the record only the sender can be tried: forged unless it matches
            forged = verdict.reason == "bad_mac"
            return DecisionOutcome("rejected", "bad_mac" if forged else "unknown_approval")
        verdict = self.tokens.verify(
            token,
            incident_id,
            current_hash,
            who,
            now,
            issued_to=approval.approver,
            issued_action_hash=approval.action_hash,
        )
        if verdict.reason in ("malformed", "bad_mac"):
            return DecisionOutcome("rejected", verdict.reason, approval)
        if who not in self.approvers:
            return DecisionOutcome("rejected", "not_approver", approval)
        return await self._finish(approval, verdict.reason, status, now, via)

    async def _decide_id(
        self,
        approval_id: str,
        status: str,
        who: str,
        current_hash: str,
        incident_id: int | None,
        via: str,
    ) -> DecisionOutcome:
        now = self.clock()
        approval = await self.store.get_approval(approval_id)
        if approval is None:
            return DecisionOutcome("rejected", "unknown_approval")
        reason: VerdictReason | None = None
        if incident_id is not None and approval.incident_id != incident_id:
            reason = "wrong_incident"
        elif who not in self.approvers or who != approval.approver:
            reason = "not_approver"
        elif approval.action_hash != current_hash:
            reason = "action_changed"
        elif now >= approval.expires_at:
            reason = "expired"
        return await self._finish(approval, reason, status, now, via)

    async def _finish(
        self,
        approval: Approval,
        reason: VerdictReason | None,
        status: str,
        now: datetime,
        via: str,
    ) -> DecisionOutcome:
        if approval.status not in ("pending", "expired"):
            return DecisionOutcome("rejected", "reused", approval)
        if reason == "expired" or approval.status == "expired":
            await self.store.decide_approval(approval.id, "expired", now, via)
            return DecisionOutcome("rejected", "expired", await self._reread(approval))
        if reason is not None:
            return DecisionOutcome("rejected", reason, approval)
        if not await self.store.decide_approval(approval.id, status, now, via):
            latest = await self._reread(approval)
            late: RejectReason = "expired" if latest.status == "expired" else "reused"
            return DecisionOutcome("rejected", late, latest)
        outcome: Literal["approved", "denied"] = "approved" if status == "approved" else "denied"
        return DecisionOutcome(outcome, None, await self._reread(approval))

    async def _reread(self, approval: Approval) -> Approval:
        return await self.store.get_approval(approval.id) or approval

    async def expire_due(self, approvals: Sequence[Approval]) -> list[Approval]:
        """Mark the pending ones whose time is up as expired; return those that changed."""
        now = self.clock()
        changed = []
        for approval in approvals:
            due = approval.status == "pending" and now >= approval.expires_at
            if due and await self.store.decide_approval(approval.id, "expired", now, None):
                changed.append(approval)
        return changed
