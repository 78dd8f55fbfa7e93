"""When a swarm service or node is an incident: pure rules over one snapshot.

- a service whose update is paused (or paused rolling back) -> `update_failed`;
- tasks failing at a rate: at least `failures` tasks failed within `window_s` since the
  service's last spec change (one task exiting once is the swarm's to restart) -> `task_failures`;
- running replicas below desired for `shortfall_s` -> `replicas_low`;
- a node down or a manager unreachable -> `node_down` on `node:NAME`, saying where its tasks went;
- reachable managers at most half of the managers -> `quorum_at_risk` (critical), `swarm:managers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mcp_server.backends.swarm.format import NodeRow, ServiceRow, TaskRow

QUORUM_TARGET = "swarm:managers"
SERVICE_SYMPTOMS = ("update_failed", "task_failures", "replicas_low")


@dataclass(frozen=True)
class SwarmLimits:
    failures: int = 3
    window_s: float = 300.0
    shortfall_s: float = 30.0


@dataclass(frozen=True)
class Finding:
    target: str
    symptom: str
    title: str
    critical: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


def recent_failures(
    row: ServiceRow, tasks: list[TaskRow], now: datetime, window_s: float
) -> list[TaskRow]:
    """Tasks of this service that failed since its last spec change and within the window."""
    start = now - timedelta(seconds=window_s)
    if row.changed_at is not None and row.changed_at > start:
        start = row.changed_at
    return [
        t
        for t in tasks
        if t.service == row.name and t.failed and t.at is not None and t.at >= start
    ]


def service_finding(
    row: ServiceRow,
    tasks: list[TaskRow],
    below_since: datetime | None,
    now: datetime,
    limits: SwarmLimits,
) -> Finding | None:
    """The one finding for a service (most telling first), or None when it is fine."""
    target = f"service:{row.name}"
    failed = recent_failures(row, tasks, now, limits.window_s)
    detail: dict[str, Any] = {
        "desired": row.desired,
        "running": row.running,
        "update_state": row.update_state,
        "failures": len(failed),
        "errors": [_err(t) for t in failed[-5:]],
        "exit_codes": sorted({t.exit_code for t in failed if t.exit_code is not None}),
    }
    if row.update_stuck:
        title = f"{target}: update {row.update_state} ({row.update_message or 'no message'})"
        return Finding(target, "update_failed", title[:300], detail=detail)
    if len(failed) >= limits.failures:
        last = failed[-1]
        title = (
            f"{target}: {len(failed)} tasks failed in {limits.window_s:g}s "
            f"(last {last.label} on {last.node}: {last.error or last.state})"
        )
        return Finding(target, "task_failures", title[:300], detail=detail)
    if below_since is not None and (now - below_since).total_seconds() >= limits.shortfall_s:
        title = (
            f"{target}: {row.running}/{row.desired} replicas running for {limits.shortfall_s:g}s+"
        )
        return Finding(target, "replicas_low", title, detail=detail)
    return None


def service_fine(row: ServiceRow, tasks: list[TaskRow], now: datetime, limits: SwarmLimits) -> bool:
    """Converged: all replicas up, no update stuck or rolling, no failure since the change."""
    if row.update_stuck or row.converging or row.running < row.desired:
        return False
    return not recent_failures(row, tasks, now, limits.window_s)


def node_findings(nodes: list[NodeRow], tasks: list[TaskRow]) -> list[Finding]:
    out = []
    for node in nodes:
        if node.fine:
            continue
        how = f"status {node.status}" if node.status != "ready" else "manager unreachable"
        if node.status != "ready" and node.reachability == "unreachable":
            how += ", manager unreachable"
        moved = moved_tasks(node, tasks)
        where = f"; tasks moved: {', '.join(moved[:5])}" if moved else ""
        detail = {
            "status": node.status,
            "reachability": node.reachability,
            "availability": node.availability,
            "moved": moved[:20],
            "message": node.message,
        }
        out.append(
            Finding(
                f"node:{node.name}",
                "node_down",
                f"node {node.name}: {how}{where}"[:300],
                detail=detail,
            )
        )
    return out


def moved_tasks(node: NodeRow, tasks: list[TaskRow]) -> list[str]:
    """`web.1 swnode3 -> swnode2` for each slot that ran on `node` and runs elsewhere now."""
    here = {
        (t.service, t.slot) for t in tasks if t.node_id.startswith(node.id) and t.slot is not None
    }
    out = []
    for t in tasks:
        if (
            (t.service, t.slot) in here
            and t.state == "running"
            and not t.node_id.startswith(node.id)
        ):
            out.append(f"{t.label} {node.name} -> {t.node}")
    lost = {f"{s}.{slot}" for s, slot in here} - {m.split(" ")[0] for m in out}
    return sorted(out) + [f"{label} lost (not running elsewhere yet)" for label in sorted(lost)]


def quorum_finding(nodes: list[NodeRow]) -> Finding | None:
    """Reachable managers <= half of the managers: one more loss and the swarm is headless."""
    managers = [n for n in nodes if n.role == "manager"]
    reachable = [n for n in managers if n.reachability == "reachable"]
    if not managers or len(reachable) > len(managers) / 2:
        return None
    title = (
        f"swarm quorum at risk: {len(reachable)} of {len(managers)} managers reachable "
        f"(needs more than {len(managers) // 2})"
    )
    down = [n.name for n in managers if n.reachability != "reachable"]
    return Finding(
        QUORUM_TARGET,
        "quorum_at_risk",
        title,
        critical=True,
        detail={"managers": len(managers), "reachable": len(reachable), "down": down},
    )


def quorum_lost(error: str) -> Finding:
    """The manager answered that the swarm has no leader: quorum is already lost."""
    return Finding(
        QUORUM_TARGET,
        "quorum_at_risk",
        f"swarm has no leader: {error}"[:300],
        critical=True,
        detail={"error": error[:300]},
    )


def _err(task: TaskRow) -> str:
    code = f" (exit {task.exit_code})" if task.exit_code is not None else ""
    return f"{task.label} on {task.node}: {task.error or task.state}{code}"
