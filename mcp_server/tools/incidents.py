"""Incident tools: what is broken, and the full story of one incident."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.deps import deps_of
from mcp_server.errors import NotFound
from mcp_server.models import Incident
from mcp_server.tools._common import READ_ONLY, parse_statuses

TIMELINE_SHOWN = 30


def incident_row(inc: Incident) -> dict[str, Any]:
    return {
        "id": inc.id,
        "target": inc.target,
        "symptom": inc.symptom,
        "status": inc.status.value,
        "severity": inc.severity.value,
        "count": inc.count,
        "title": inc.title[:120],
        "updated_at": inc.updated_at.isoformat(timespec="seconds"),
    }


async def list_incidents(
    ctx: Context,
    status: str | None = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """List incidents, newest activity first. status: comma list of open, diagnosing,
    awaiting_approval, healing, verifying, resolved, escalated, or 'active' (= not resolved).
    Call get_incident(id) for the timeline and RCA."""
    store = deps_of(ctx).store
    rows = await store.list_incidents(parse_statuses(status), limit=limit + 1)
    out: dict[str, Any] = {"incidents": [incident_row(i) for i in rows[:limit]]}
    if len(rows) > limit:
        out["note"] = f"more than {limit} incidents; raise limit or filter by status"
    return out


async def get_incident(incident_id: int, ctx: Context) -> dict[str, Any]:
    """One incident: status, repeat count, detail, timeline (latest entries) and its RCA."""
    store = deps_of(ctx).store
    inc = await store.get_incident(incident_id)
    if inc is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    data = inc.model_dump(mode="json", exclude={"timeline"})
    timeline = [t.model_dump(mode="json") for t in inc.timeline]
    data["timeline"] = timeline[-TIMELINE_SHOWN:]
    if len(timeline) > TIMELINE_SHOWN:
        data["timeline_note"] = f"showing the last {TIMELINE_SHOWN} of {len(timeline)} entries"
    rca = await store.get_rca(incident_id)
    data["rca"] = rca.model_dump(mode="json") if rca else None
    return data


def register(server: FastMCP) -> None:
    server.tool(list_incidents, annotations=READ_ONLY)
    server.tool(get_incident, annotations=READ_ONLY)
