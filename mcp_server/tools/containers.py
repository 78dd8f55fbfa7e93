"""Container tools: a compact list and a bounded inspect."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastmcp import Context, FastMCP

from mcp_server.core.holds import Holds, held_note, hold_view, label_hold
from mcp_server.core.targets import Target
from mcp_server.deps import Deps, deps_of
from mcp_server.errors import Unavailable
from mcp_server.models import Hold
from mcp_server.tools._common import READ_ONLY, add_tool, bounded_list

MAX_ROWS = 100


def docker_of(ctx: Context) -> Any:
    docker = deps_of(ctx).services.docker
    if docker is None:
        raise Unavailable("Docker watching is switched off in this server; other tools work")
    return docker


async def list_containers(
    ctx: Context, selector: str | None = None, status: str | None = None
) -> dict[str, Any]:
    """Containers, one line each: status, health, exit code, restarts, image, labels.
    selector: labels, e.g. "env=prod,opsmedic.managed=true" (key, key=v, key!=v).
    status: running, exited, restarting, paused, created, dead, unhealthy."""
    rows = await docker_of(ctx).list_containers(selector, status)
    shown, note = bounded_list(rows, MAX_ROWS)
    held = await _holds_for(deps_of(ctx), shown)
    lines = [
        f"{r.line()} | {held_note(held[r.name])}" if r.name in held else r.line() for r in shown
    ]
    out: dict[str, Any] = {"containers": lines, "count": len(rows)}
    if note:
        out["note"] = note
    return out


async def _holds_for(deps: Deps, rows: Sequence[Any]) -> dict[str, Hold]:
    """name -> hold in force: one read of the stored holds per call, plus each row's labels."""
    holds = deps.services.holds
    if not isinstance(holds, Holds):
        return {}
    now = holds.now()
    stored = await holds.by_target(now)
    out: dict[str, Hold] = {}
    for r in rows:
        target = Target("container", r.name)
        found = stored.get(str(target)) or label_hold(target, r.labels, now)
        if found is not None:
            out[r.name] = found
    return out


async def inspect_container(name: str, ctx: Context) -> dict[str, Any]:
    """One container in depth: state, exit code, OOMKilled, error, restarts, health log,
    limits, mounts, labels."""
    deps = deps_of(ctx)
    detail = await docker_of(ctx).inspect_container(name)
    data: dict[str, Any] = detail.model_dump(mode="json", exclude_none=True)
    holds = deps.services.holds
    if isinstance(holds, Holds):
        held = await holds.active(Target("container", detail.name), detail.labels)
        if held is not None:
            data["held"] = hold_view(held, holds.now())
    return data


def register(server: FastMCP) -> None:
    add_tool(server, list_containers, READ_ONLY)
    add_tool(server, inspect_container, READ_ONLY)
