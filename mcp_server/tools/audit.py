"""Audit tools: leave a note in the chain, and check the chain."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.deps import deps_of
from mcp_server.middleware import caller_identity
from mcp_server.models import AuditVerdict
from mcp_server.tools._common import READ_ONLY, WRITE, IncidentId, add_tool


async def write_audit_entry(
    event: Annotated[str, Field(min_length=1)],
    detail: str,
    ctx: Context,
    target: str | None = None,
    incident_id: IncidentId | None = None,
) -> dict[str, Any]:
    """Note a decision in the audit log (e.g. why you chose not to act). Tool calls are
    audited automatically."""
    deps = deps_of(ctx)
    actor, transport = caller_identity(ctx)
    entry = await deps.auditor.record(
        actor=actor,
        transport=transport,
        tool=f"note:{event[:100]}",
        args={"detail": detail},
        target=target,
        incident_id=incident_id,
        outcome="note",
    )
    return {"seq": entry.seq, "hash": entry.hash}


async def verify_audit(ctx: Context) -> AuditVerdict:
    """Check the audit hash chain: ok, or the first edited/deleted/reordered seq and why."""
    return await deps_of(ctx).auditor.verify()


def register(server: FastMCP) -> None:
    add_tool(server, write_audit_entry, WRITE)
    add_tool(server, verify_audit, READ_ONLY)
