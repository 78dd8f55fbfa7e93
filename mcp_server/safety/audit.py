"""The audit trail: turns "who did what, why, with what outcome" into a chained entry.

Arguments, target and decision are redacted before they reach the store. Pure apart from
the store call.
"""

from __future__ import annotations

from typing import Any

from mcp_server.models import AuditDraft, AuditEntry, AuditVerdict
from mcp_server.safety.redaction import Redactor
from mcp_server.store.base import Store

MAX_ARG_CHARS = 2000


class Auditor:
    def __init__(self, store: Store, redactor: Redactor) -> None:
        self._store = store
        self._redactor = redactor

    async def record(
        self,
        *,
        actor: str,
        transport: str,
        tool: str,
        outcome: str,
        args: dict[str, Any] | None = None,
        target: str | None = None,
        decision: str | None = None,
        duration_ms: float | None = None,
        incident_id: int | None = None,
    ) -> AuditEntry:
        """Append one entry. Raises whatever the store raises: callers that are about to do
        something destructive must not proceed when this fails."""
        draft = AuditDraft(
            actor=actor,
            transport=transport,
            tool=tool,
            args=_cap(self._redactor.redact(args or {})),
            target=None if target is None else self._redactor.redact_text(target),
            decision=None if decision is None else self._redactor.redact_text(decision),
            outcome=outcome,
            duration_ms=None if duration_ms is None else round(duration_ms, 3),
            incident_id=incident_id,
        )
        return await self._store.append_audit(draft)

    async def verify(self) -> AuditVerdict:
        return await self._store.verify_audit()


def _cap(args: dict[str, Any]) -> dict[str, Any]:
    """Keep long values from bloating the chain: strings are cut with a visible marker."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and len(value) > MAX_ARG_CHARS:
            value = value[:MAX_ARG_CHARS] + f"…[+{len(value) - MAX_ARG_CHARS} chars]"
        out[key] = value
    return out
