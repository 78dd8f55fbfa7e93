"""Mail tools: tell people (send_email) and hear back from them (read_replies)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.backends.mail.compose import alert_body, subject_for
from mcp_server.deps import deps_of
from mcp_server.errors import InvalidInput, NotFound
from mcp_server.safety.recipients import RecipientPolicy
from mcp_server.tools._common import READ_ONLY, WRITE, IncidentId, add_tool

FLUSH_WAIT_S = 5.0
MAX_BODY = 20_000
MAX_REPLIES = 50


async def send_email(
    subject: Annotated[str, Field(min_length=1)],
    body: str,
    ctx: Context,
    to: list[str] | None = None,
    incident_id: IncidentId | None = None,
) -> dict[str, Any]:
    """Email people (default: the notify list; others only if an operator allowed them).
    With incident_id: tagged [OPSMEDIC-N], threaded, with incident summary and RCA.
    Queued durably and retried."""
    deps = deps_of(ctx)
    s = deps.settings
    if not (to or s.notify.to):
        raise InvalidInput("no recipients: pass `to` or set OPSMEDIC_NOTIFY__TO")
    policy = RecipientPolicy(s.notify.to, s.approvers, s.notify.allow)
    recipients = policy.check(to or s.notify.to)
    text, html = body[:MAX_BODY], None
    if incident_id is not None:
        inc = await deps.store.get_incident(incident_id)
        if inc is None:
            raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
        rca = await deps.store.get_rca(incident_id)
        summary_text, html = alert_body(inc, rca, dashboard_url=deps.settings.notify.dashboard_url)
        text = f"{body}\n\n{summary_text}"
        subject = subject_for(incident_id, inc.severity, subject)
    outbox = deps.services.outbox
    msg = await outbox.enqueue(recipients, subject, text, html=html, incident_id=incident_id)
    with anyio.move_on_after(FLUSH_WAIT_S):
        await outbox.flush()
    stored = await deps.store.get_message(msg.id) or msg
    out: dict[str, Any] = {"message_id": stored.id, "status": stored.status, "to": recipients}
    if stored.status == "queued":
        out["note"] = (
            stored.last_error or "queued; it is sent as soon as the mail server accepts it"
        )
    return out


async def read_replies(ctx: Context, incident_id: IncidentId | None = None) -> dict[str, Any]:
    """Replies people sent by email, newest first: sender, incident, decision, and whether
    it was accepted (approved/denied), rejected (and why), ignored, or kept as a note."""
    rows = await deps_of(ctx).store.list_messages(incident_id, direction="in", limit=MAX_REPLIES)
    replies = [
        {
            "message_id": m.id,
            "from": m.headers.get("from", ""),
            "incident_id": m.incident_id,
            "decision": m.headers.get("decision"),
            "verdict": m.headers.get("verdict"),
            "reason": m.headers.get("reason"),
            "note": m.body_text[:500],
            "at": m.created_at.isoformat(timespec="seconds"),
        }
        for m in rows
    ]
    return {"replies": replies, "count": len(replies)}


def register(server: FastMCP) -> None:
    add_tool(server, send_email, WRITE)
    add_tool(server, read_replies, READ_ONLY)
