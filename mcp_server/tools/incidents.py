"""Incident tools: what is broken, and the full story of one incident."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.tools.base import ToolResult
from mcp_types import TextContent
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.core.incidents import incident_row
from mcp_server.deps import deps_of
from mcp_server.errors import Conflict, InvalidInput, NotFound, Refused
from mcp_server.middleware import caller_identity
from mcp_server.models import Evidence, IncidentStatus, Rca, RcaCategory, utcnow
from mcp_server.safety.redaction import frame_untrusted
from mcp_server.tools._common import READ_ONLY, WRITE, IncidentId, add_tool, parse_statuses

TIMELINE_SHOWN = 30
MAX_EVIDENCE = 20
MAX_NOTE = 2000
TRIAGE_TTL_S = 120.0  # a runner that died mid-triage blocks others at most this long
CLAIM_LOOK_AGAIN_S = 10.0  # a claim held elsewhere: when to look again (its holder may die)
TRIAGED = "triaged"  # detail key: {instance, count} of the last RCA (one triage per fleet)


async def list_incidents(
    ctx: Context,
    status: str | None = None,
    limit: Annotated[int, Field(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Incidents, newest activity first. status: comma list (open, resolved, ...) or
    "active" (not resolved). get_incident(id) has the details."""
    store = deps_of(ctx).store
    rows = await store.list_incidents(parse_statuses(status), limit=limit + 1)
    out: dict[str, Any] = {"incidents": [incident_row(i) for i in rows[:limit]]}
    if len(rows) > limit:
        out["note"] = f"more than {limit} incidents; raise limit or filter by status"
    return out


async def get_incident(incident_id: IncidentId, ctx: Context) -> ToolResult:
    """One incident: status, repeat count, detail, timeline and RCA."""
    deps = deps_of(ctx)
    store = deps.store
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
    # what a model reads is framed: titles, notes and RCA texts quote logs and other systems;
    # programs read the same fields unframed from the structured content
    text = json.dumps(deps.redactor.redact(data), ensure_ascii=False)
    framed = frame_untrusted(text, f"incident {incident_id}", max_chars=len(text) + 1)
    return ToolResult(content=[TextContent(type="text", text=framed)], structured_content=data)


class RcaInput(BaseModel):
    # An RCA as a model writes it; no docstring, so the schema stays short.
    model_config = ConfigDict(extra="forbid")

    summary: Annotated[str, Field(min_length=3)]
    category: RcaCategory = "unknown"
    evidence: list[Evidence] = []
    recommendation: str = ""
    restart_safe: bool = False
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.5
    author: str = ""  # rules, or the model's name (default: the caller)


async def record_rca(incident_id: IncidentId, rca: RcaInput, ctx: Context) -> dict[str, Any]:
    """Store your root-cause analysis (replaces an earlier one); evidence = log lines you
    read, with their source. Advice only: it triggers nothing."""
    deps = deps_of(ctx)
    inc = await deps.store.get_incident(incident_id)
    if inc is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    actor = caller_identity(ctx)[0]
    author = rca.author[:100] or actor
    data = {**rca.model_dump(), "author": author, "evidence": rca.evidence[:MAX_EVIDENCE]}
    stored = Rca(
        incident_id=incident_id,
        summary=rca.summary[:2000],
        **{k: v for k, v in data.items() if k != "summary"},
    )
    await deps.store.put_rca(stored)
    # the occurrence this RCA answers, and which OpsMedic wrote it (see update_incident)
    mark = {TRIAGED: {"instance": deps.instance, "count": inc.count}}
    await deps.store.update_incident(incident_id, detail=mark)
    await deps.services.incidents.note(
        incident_id, "rca", f"{stored.category} ({author}): {stored.summary[:200]}", actor=actor
    )
    return {"incident_id": incident_id, "category": stored.category, "author": author}


async def update_incident(
    incident_id: IncidentId,
    ctx: Context,
    status: IncidentStatus | None = None,
    note: str = "",
    claim: bool = False,
) -> dict[str, Any]:
    """Set an incident's status and/or add a note. claim=True (or status diagnosing)
    takes its triage; refused while another OpsMedic has it or has diagnosed it."""
    if status is None and not note:
        raise InvalidInput("give a status, a note, or both")
    note = note[:MAX_NOTE]
    deps = deps_of(ctx)
    incidents = deps.services.incidents
    actor = caller_identity(ctx)[0]
    inc = await deps.store.get_incident(incident_id)
    if inc is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    found = inc.detail.get(TRIAGED)
    triaged: dict[str, Any] = found if isinstance(found, dict) else {}
    by = triaged.get("instance", deps.instance)
    if claim and triaged.get("count") == inc.count and by != deps.instance:  # one per fleet
        raise Conflict(
            f"incident {incident_id} was diagnosed by OpsMedic {by} "
            "and not seen again since; its RCA is on the incident"
        )
    lease = f"triage:{incident_id}"
    if claim or status == IncidentStatus.diagnosing:
        if not await deps.store.acquire_lease(lease, deps.holder, TRIAGE_TTL_S, utcnow()):
            raise Refused(
                f"another OpsMedic is diagnosing incident {incident_id}; its RCA lands there",
                {"refused": True, "rule": "triage_claim", "wait_s": CLAIM_LOOK_AGAIN_S,
                 "escalate": False, "remedy": "look again later: its holder may finish "
                 f"without acting or die (the claim lasts at most {TRIAGE_TTL_S:g} s)"},
            )  # fmt: skip
    elif status is not None:
        await deps.store.release_lease(lease, deps.holder)
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
