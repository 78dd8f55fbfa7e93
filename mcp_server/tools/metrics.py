"""read_metrics: host, containers or managed processes, each graded ok / warn / crit."""

from __future__ import annotations

from typing import Any, Literal

from fastmcp import Context, FastMCP

from mcp_server.deps import deps_of
from mcp_server.tools._common import READ_ONLY, add_tool
from mcp_server.tools.containers import docker_of


async def read_metrics(
    ctx: Context, scope: Literal["host", "containers", "processes"] = "host"
) -> dict[str, Any]:
    """Resource usage graded ok/warn/crit. host: cpu, load, memory, swap, disks, network,
    top processes; containers: cpu/memory each; processes: managed ones."""
    deps = deps_of(ctx)
    if scope == "host":
        report = await deps.services.host.read_host(deps.settings.thresholds)
        return {"scope": "host", "status": report.status, "report": report.render()}
    if scope == "containers":
        rows = await docker_of(ctx).stats()
        return {"scope": "containers", "containers": rows[:100]}
    sup = deps.services.processes
    if sup is None:
        return {"scope": "processes", "processes": [], "note": "no managed processes configured"}
    rows = [sup.inspect(name).model_dump(mode="json", exclude_none=True) for name in sup.names()]
    return {"scope": "processes", "processes": rows[:50]}


def register(server: FastMCP) -> None:
    add_tool(server, read_metrics, READ_ONLY)
