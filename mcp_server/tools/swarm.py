"""Swarm tools: services (replicas, update, task errors, nodes) and nodes, one line each;
one service in depth. Registered only on servers configured with a swarm manager."""

from __future__ import annotations

from typing import Any

from fastmcp import Context, FastMCP

from mcp_server.backends.swarm.engine import SwarmBackend, spec_change
from mcp_server.backends.swarm.format import node_line, service_line
from mcp_server.deps import deps_of
from mcp_server.errors import Unavailable
from mcp_server.tools._common import READ_ONLY, add_tool, bounded_list

MAX_ROWS = 100
MAX_TASKS = 20


def swarm_of(ctx: Context) -> SwarmBackend:
    swarm = deps_of(ctx).services.swarm
    if swarm is None:
        raise Unavailable("no swarm manager is configured; set OPSMEDIC_SWARM__DOCKER_HOST")
    return swarm


async def list_services(
    ctx: Context, name: str | None = None, nodes: bool = False
) -> dict[str, Any]:
    """Swarm services, one line each: replicas running/desired, update state, task
    failures with the last error, nodes. name: one service in depth (tasks, errors, what
    its last update changed). nodes=True: the nodes (status, availability, reachability)."""
    swarm = swarm_of(ctx)
    if name:
        return await _one_service(swarm, name)
    snap = await swarm.snapshot()
    rows: list[Any] = snap.nodes if nodes else snap.services
    shown, note = bounded_list(rows, MAX_ROWS)
    lines = [node_line(r) if nodes else service_line(r) for r in shown]
    out: dict[str, Any] = {"nodes" if nodes else "services": lines, "count": len(rows)}
    if note:
        out["note"] = note
    return out


async def _one_service(swarm: SwarmBackend, name: str) -> dict[str, Any]:
    row, tasks = await swarm.service(name)
    doc = await swarm.spec(name)
    out = row.as_json()
    out["tasks"] = [
        f"{t.label} {t.id} on {t.node}: {t.state} (desired {t.desired})"
        + (f": {t.error}" if t.error else "")
        + (f" exit {t.exit_code}" if t.exit_code is not None else "")
        for t in tasks[:MAX_TASKS]
    ]
    changed = spec_change(doc)
    if changed:
        out["last_update_changed"] = changed
    update = (doc.get("Spec") or {}).get("UpdateConfig") or {}
    out["update_config"] = {k: update[k] for k in ("Parallelism", "FailureAction") if k in update}
    out["can_roll_back"] = bool(doc.get("PreviousSpec"))
    return out


def register(server: FastMCP) -> None:
    add_tool(server, list_services, READ_ONLY)
