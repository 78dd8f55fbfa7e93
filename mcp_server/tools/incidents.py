"""Incident tools: what is broken, and the full story of one incident."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.deps import deps_of
from mcp_server.errors import InvalidInput, NotFound
from mcp_server.incidents import incident_row
from mcp_server.middleware import caller_identity
from mcp_server.models import Evidence, IncidentStatus, Rca, RcaCategory
from mcp_server.tools._common import READ_ONLY, WRITE, add_tool, parse_statuses

TIMELINE_SHOWN = 30


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


class RcaInput(BaseModel):
    # An RCA as a model writes it; no docstring, so the schema stays short.
    model_config = ConfigDict(extra="forbid")

    summary: Annotated[str, Field(min_length=3, max_length=2000)]
    category: RcaCategory = "unknown"
    evidence: Annotated[list[Evidence], Field(max_length=20)] = []
    recommendation: Annotated[str, Field(max_length=2000)] = ""
    restart_safe: bool = False
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.5
    author: Annotated[str | None, Field(max_length=100)] = None  # rules, or the model's name


async def record_rca(incident_id: int, rca: RcaInput, ctx: Context) -> dict[str, Any]:
    """Store your root-cause analysis of an incident (replaces an earlier one). Evidence:
    lines quoted from logs you read, with their source. Advice only: it triggers nothing."""
    deps = deps_of(ctx)
    if await deps.store.get_incident(incident_id) is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    actor = caller_identity(ctx)[0]
    author = rca.author or actor
    stored = Rca(incident_id=incident_id, **{**rca.model_dump(), "author": author})
    await deps.store.put_rca(stored)
    await deps.extras["incidents"].note(
        incident_id, "rca", f"{stored.category} ({author}): {stored.summary[:200]}", actor=actor
    )
    return {"incident_id": incident_id, "category": stored.category, "author": author}


async def update_incident(
    incident_id: int,
    ctx: Context,
    status: IncidentStatus | None = None,
    note: Annotated[str | None, Field(max_length=2000)] = None,
) -> dict[str, Any]:
    """Change an incident's status (e.g. resolved, escalated) and/or add a note to its
    timeline. Use a note to record what you found or what a person told you."""
    if status is None and not note:
        raise InvalidInput("give a status, a note, or both")
    deps = deps_of(ctx)
    incidents = deps.extras["incidents"]
    actor = caller_identity(ctx)[0]
    if await deps.store.get_incident(incident_id) is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    if status is not None:
        inc = await incidents.transition(incident_id, status, note or "changed by a client", actor)
    else:
        inc = await incidents.note(incident_id, "note", note or "", actor=actor)
    return incident_row(inc)


def register(server: FastMCP) -> None:
    add_tool(server, list_incidents, READ_ONLY)
    add_tool(server, get_incident, READ_ONLY)
    add_tool(server, record_rca, WRITE)
    add_tool(server, update_incident, WRITE)
