"""The audit trail: turns "who did what, why, with what outcome" into a chained entry.

Arguments, target and decision are redacted before they reach the store. Pure apart from
the store call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mcp_server.errors import OpsMedicError
from mcp_server.models import AuditDraft, AuditEntry, AuditVerdict
from mcp_server.safety.audit_anchor import (
    AnchorError,
    advance_anchor,
    default_anchor_path,
    verify_anchored,
)
from mcp_server.safety.audit_keys import AuditKeys, load_audit_keys
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import Settings
from mcp_server.store.base import Store

logger = logging.getLogger(__name__)

MAX_ARG_CHARS = 2000


class Auditor:
    """Writes entries; with `keys` the store HMACs them, with `anchor` the head is anchored
    outside the store (see safety/audit_anchor.py) and verify() checks against it."""

    def __init__(
        self,
        store: Store,
        redactor: Redactor,
        keys: AuditKeys | None = None,
        anchor: Path | None = None,
        instance: str | None = None,
    ) -> None:
        self._store = store
        self.instance = instance  # named on every entry this auditor writes
        self._redactor = redactor
        self.keys = keys
        self.anchor_path = anchor
        self.anchored_seq: int | None = None  # for the opsmedic_audit_head_seq metric
        if keys is not None and hasattr(store, "audit_keys"):
            store.audit_keys = keys

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
            instance=self.instance,
        )
        return await self._store.append_audit(draft)

    async def verify(self) -> AuditVerdict:
        if self.keys is None or self.anchor_path is None:
            return await self._store.verify_audit()
        return await verify_anchored(self._store, self.keys, self.anchor_path)

    async def anchor(self) -> str:
        """Move the anchor to the current head; the task status ("running" or why not)."""
        if self.keys is None or self.anchor_path is None:
            return "running"
        try:
            anchor = await advance_anchor(self._store, self.keys, self.anchor_path)
        except AnchorError as exc:
            logger.error("audit anchor not advanced: %s", exc)
            return f"failed: {exc}; run `opsmedic audit verify`"
        except OSError as exc:
            logger.error("audit anchor %s cannot be written: %s", self.anchor_path, exc)
            return f"failed: cannot write {self.anchor_path} ({exc.strerror or exc})"
        except OpsMedicError as exc:  # the store is away: try again at the next interval
            logger.warning("audit anchor not advanced: %s", exc)
            return f"retrying: {exc}"
        self.anchored_seq = anchor.seq
        return "running"


def audit_keys_and_anchor(settings: Settings) -> tuple[AuditKeys, Path]:
    """The audit HMAC keys and the anchor file path, from settings (see AuditSettings)."""
    a = settings.audit
    keys = load_audit_keys(a.keys.get_secret_value() if a.keys else None, settings.data_dir)
    return keys, a.anchor_path or default_anchor_path(settings.data_dir)


def _cap(args: dict[str, Any]) -> dict[str, Any]:
    """Keep long values from bloating the chain: strings are cut with a visible marker."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and len(value) > MAX_ARG_CHARS:
            value = value[:MAX_ARG_CHARS] + f"…[+{len(value) - MAX_ARG_CHARS} chars]"
        out[key] = value
    return out
