"""wait_for_events: the long-poll that lets any client follow detections live."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.core.incidents import ACTIVE, incident_row
from mcp_server.deps import deps_of
from mcp_server.models import Event
from mcp_server.tools._common import READ_ONLY, Cursor, add_tool

MAX_EVENTS = 50


def event_row(e: Event) -> dict[str, Any]:
    row: dict[str, Any] = {"seq": e.seq, "ts": e.ts.isoformat(timespec="milliseconds")}
    row.update({"type": e.type, "source": e.source})
    if e.target:
        row["target"] = e.target
    if e.incident_id is not None:
        row["incident_id"] = e.incident_id
    if e.data:
        row["data"] = {k: (v[:200] if isinstance(v, str) else v) for k, v in e.data.items()}
    return row


async def wait_for_events(
    ctx: Context,
    cursor: Cursor | None = None,
    timeout_s: Annotated[float, Field(ge=0, le=120)] = 25,
) -> dict[str, Any]:
    """Long-poll for changes (incidents opened/repeated/changed, actions). Without a
    cursor: the active incidents and a cursor. With one: waits up to timeout_s, returns
    new events (oldest first, max 50) and the next cursor."""
    deps = deps_of(ctx)
    if cursor is None:
        head = await deps.bus.head()
        active = await deps.store.list_incidents(ACTIVE, limit=MAX_EVENTS)
        return {"cursor": head, "events": [], "active_incidents": [incident_row(i) for i in active]}
    events = await deps.bus.wait(cursor, timeout_s, limit=MAX_EVENTS + 1)
    shown = events[:MAX_EVENTS]
    out: dict[str, Any] = {
        "cursor": shown[-1].seq if shown else cursor,
        "events": [event_row(e) for e in shown],
    }
    if len(events) > MAX_EVENTS:
        out["note"] = "more events are waiting: call again with the new cursor"
    return out


def register(server: FastMCP) -> None:
    add_tool(server, wait_for_events, READ_ONLY)
