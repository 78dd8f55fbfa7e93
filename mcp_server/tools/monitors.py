"""run_monitor: execute a configured monitor now and get its verdict and evidence."""

from __future__ import annotations

from typing import Any

from fastmcp import Context, FastMCP

from mcp_server.deps import deps_of
from mcp_server.tools._common import WRITE, add_tool, bounded_list


async def run_monitor(name: str, ctx: Context) -> dict[str, Any]:
    """Run a configured monitor now: verdict ok/warn/alert, per input, with evidence."""
    run = await deps_of(ctx).services.monitors.run(name)
    lines, note = bounded_list(run.log, 200)
    out: dict[str, Any] = {
        "run_id": run.id,
        "verdict": run.verdict,
        "notify_on": run.detail.get("notify_on"),
        "prompt": run.detail.get("prompt"),
        "inputs": run.detail.get("inputs", []),
        "evidence": lines,
    }
    if note:
        out["note"] = note
    return out


def register(server: FastMCP) -> None:
    add_tool(server, run_monitor, WRITE)
