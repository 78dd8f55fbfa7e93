"""Maintenance holds: hold(target, reason, until) and release(target). Audited by the service."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import Context, FastMCP
from pydantic import Field

from mcp_server.core.holds import HOLD_LABEL, Holds, hold_view, parse_until
from mcp_server.core.targets import Target
from mcp_server.deps import Deps, deps_of
from mcp_server.errors import Unavailable
from mcp_server.middleware import audit_note, caller_identity
from mcp_server.tools._common import WRITE, add_tool


def holds_of(deps: Deps) -> Holds:
    holds = deps.services.holds
    if not isinstance(holds, Holds):  # pragma: no cover - a wiring bug, not user input
        raise Unavailable("holds are not set up in this server")
    return holds


async def hold(
    target: str,
    reason: Annotated[str, Field(min_length=3, max_length=500)],
    until: str,
    ctx: Context,
) -> dict[str, Any]:
    """Hold a target a person stopped on purpose: watched and shown as held, never healed
    until the hold ends. until: "30m", "2h", "1d" (max 7d) or an ISO-8601 UTC time."""
    holds = holds_of(deps_of(ctx))
    parsed = Target.parse(target)
    audit_note(target=str(parsed))
    now = holds.now()
    end = parse_until(until, now)
    made = await holds.hold(parsed, reason, end, actor=caller_identity(ctx)[0])
    return {"held": True, **hold_view(made, now)}


async def release(target: str, ctx: Context) -> dict[str, Any]:
    """End a target's hold now, so policy may heal it again."""
    holds = holds_of(deps_of(ctx))
    parsed = Target.parse(target)
    audit_note(target=str(parsed))
    released = await holds.release(parsed, actor=caller_identity(ctx)[0])
    out: dict[str, Any] = {"target": str(parsed), "released": released}
    if not released:
        out["note"] = (
            f"{parsed} had no hold to release; a hold by label {HOLD_LABEL}=true ends "
            "only when that label is removed from the target"
        )
    return out


def register(server: FastMCP) -> None:
    add_tool(server, hold, WRITE)
    add_tool(server, release, WRITE)
