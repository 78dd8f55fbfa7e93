"""Container tools: a compact list and a bounded inspect."""

from __future__ import annotations

from typing import Any

from fastmcp import Context, FastMCP

from mcp_server.deps import deps_of
from mcp_server.errors import Unavailable
from mcp_server.tools._common import READ_ONLY, add_tool, bounded_list

MAX_ROWS = 100


def docker_of(ctx: Context) -> Any:
    docker = deps_of(ctx).extras.get("docker")
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
    out: dict[str, Any] = {"containers": [r.line() for r in shown], "count": len(rows)}
    if note:
        out["note"] = note
    return out


async def inspect_container(name: str, ctx: Context) -> dict[str, Any]:
    """One container in depth: state, exit code, OOMKilled, error, restarts, health log,
    limits, mounts, labels."""
    detail = await docker_of(ctx).inspect_container(name)
    data: dict[str, Any] = detail.model_dump(mode="json", exclude_none=True)
    return data


def register(server: FastMCP) -> None:
    add_tool(server, list_containers, READ_ONLY)
    add_tool(server, inspect_container, READ_ONLY)
