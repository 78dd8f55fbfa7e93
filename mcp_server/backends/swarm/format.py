"""Typed rows for Swarm services, tasks and nodes, built from the engine's API documents.

Pure functions: the API dicts in, bounded pydantic rows out (tests feed them plain dicts).
`ServiceRow` and `NodeRow` are what listings, the dashboard and the detection rules read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

MAX_ERRORS = 5
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAILED_STATES = frozenset({"failed", "rejected"})
#: a task in one of these is on its way to running: the swarm is bringing it up
PENDING_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "starting"})


class TaskRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    service: str
    slot: int | None = None
    node_id: str = ""
    node: str = ""  # hostname, when known
    state: str = ""
    desired: str = ""
    error: str = ""
    exit_code: int | None = None
    at: datetime | None = None
    container_id: str = ""

    @property
    def label(self) -> str:
        """How a task is named in `service ps`: service.slot (global services: service.node)."""
        return (
            f"{self.service}.{self.slot}"
            if self.slot is not None
            else f"{self.service}.{self.node}"
        )

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


class ServiceRow(BaseModel):
    """One service: replicas desired vs running, its update, recent task errors, its nodes."""

    model_config = ConfigDict(frozen=True)

    name: str
    id: str
    mode: str  # replicated / global
    image: str
    desired: int
    running: int
    update_state: str | None = None  # updating, paused, completed, rollback_started, ...
    update_message: str = ""
    changed_at: datetime | None = None  # when the current spec's update began (or created)
    failures: int = 0  # tasks failed since the last spec change (update, force, rollback)
    last_errors: list[str] = []
    nodes: list[str] = []  # hostnames where a task runs now
    labels: dict[str, str] = {}

    @property
    def update_stuck(self) -> bool:
        return self.update_state in ("paused", "rollback_paused")

    @property
    def converging(self) -> bool:
        """The swarm is rolling an update or a rollback itself."""
        return self.update_state in ("updating", "rollback_started")

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True) | {
            "desired": self.desired,
            "running": self.running,
        }


class NodeRow(BaseModel):
    """One node: status, availability, manager reachability, engine version."""

    model_config = ConfigDict(frozen=True)

    name: str  # hostname
    id: str
    role: str  # manager / worker
    status: str  # ready / down / unknown / disconnected
    availability: str  # active / pause / drain
    reachability: str | None = None  # managers: reachable / unreachable / unknown
    leader: bool = False
    engine: str = ""
    addr: str = ""
    message: str = ""

    @property
    def fine(self) -> bool:
        return self.status == "ready" and self.reachability in (None, "reachable")

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True) | {"status": self.status}


def parse_time(text: str | None) -> datetime | None:
    if not text or text.startswith("0001-"):
        return None
    main, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{main}.{(frac + '000000')[:6]}+00:00")


def task_row(doc: dict[str, Any], service: str, hostnames: dict[str, str]) -> TaskRow:
    status = doc.get("Status") or {}
    cstatus = status.get("ContainerStatus") or {}
    node_id = str(doc.get("NodeID") or "")
    return TaskRow(
        id=str(doc.get("ID", ""))[:12],
        service=service,
        slot=doc.get("Slot"),
        node_id=node_id,
        node=hostnames.get(node_id, node_id[:12]),
        state=str(status.get("State", "")),
        desired=str(doc.get("DesiredState", "")),
        error=str(status.get("Err") or "")[:300],
        exit_code=cstatus.get("ExitCode") if status.get("State") in FAILED_STATES else None,
        at=parse_time(status.get("Timestamp")),
        container_id=str(cstatus.get("ContainerID") or "")[:12],
    )


def node_row(doc: dict[str, Any]) -> NodeRow:
    desc, status = doc.get("Description") or {}, doc.get("Status") or {}
    spec, manager = doc.get("Spec") or {}, doc.get("ManagerStatus") or {}
    return NodeRow(
        name=str(desc.get("Hostname") or doc.get("ID", ""))[:120],
        id=str(doc.get("ID", ""))[:12],
        role=str(spec.get("Role", "")),
        status=str(status.get("State", "unknown")),
        availability=str(spec.get("Availability", "")),
        reachability=manager.get("Reachability") if manager else None,
        leader=bool(manager.get("Leader")),
        engine=str((desc.get("Engine") or {}).get("EngineVersion", "")),
        addr=str(status.get("Addr") or manager.get("Addr") or ""),
        message=str(status.get("Message") or "")[:200],
    )


def service_row(doc: dict[str, Any], tasks: list[TaskRow]) -> ServiceRow:
    """`doc` from the services list with status=True (ServiceStatus carries the counts)."""
    spec = doc.get("Spec") or {}
    mode = "global" if "Global" in (spec.get("Mode") or {}) else "replicated"
    counts = doc.get("ServiceStatus") or {}
    update = doc.get("UpdateStatus") or {}
    # the last update (or rollback, or force) began then; the engine bumps UpdatedAt on every
    # status change, so it cannot say which tasks came from the current spec
    changed_at = parse_time(update.get("StartedAt")) or parse_time(doc.get("CreatedAt"))
    failed = [
        t for t in tasks if t.failed and (changed_at is None or (t.at and t.at >= changed_at))
    ]
    failed.sort(key=lambda t: t.at or EPOCH)
    image = str(((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", ""))
    return ServiceRow(
        name=str(spec.get("Name", "")),
        id=str(doc.get("ID", ""))[:12],
        mode=mode,
        image=image.split("@", 1)[0],
        desired=int(counts.get("DesiredTasks", 0)),
        running=int(counts.get("RunningTasks", 0)),
        update_state=update.get("State") or None,
        update_message=str(update.get("Message") or "")[:300],
        changed_at=changed_at,
        failures=len(failed),
        last_errors=[_error_line(t) for t in failed[-MAX_ERRORS:]],
        nodes=sorted({t.node for t in tasks if t.state == "running"}),
        labels={k: str(v)[:200] for k, v in list((spec.get("Labels") or {}).items())[:30]},
    )


def _error_line(task: TaskRow) -> str:
    return f"{task.label} on {task.node}: {task.error or task.state}"


def describe(row: ServiceRow) -> str:
    """`2/3 running, update paused, 4 task failures (last: web.1 on n2: task: non-zero exit (2))`"""
    parts = [f"{row.running}/{row.desired} running"]
    if row.update_state and row.update_state != "completed":
        parts.append(f"update {row.update_state.replace('_', ' ')}")
    if row.failures:
        last = f" (last: {row.last_errors[-1]})" if row.last_errors else ""
        parts.append(f"{row.failures} task failures{last}")
    return ", ".join(parts)


def service_line(row: ServiceRow) -> str:
    """`web | replicated | 2/3 running, update paused, ... | img | nodes: n1,n2`"""
    nodes = f" | nodes: {','.join(row.nodes)}" if row.nodes else ""
    return f"{row.name} | {row.mode} | {describe(row)} | {row.image}{nodes}"


def node_line(row: NodeRow) -> str:
    """`n1 | manager (leader) | ready | active | reachable | engine 20.10.24 | 198.18.0.11`"""
    role = f"{row.role} (leader)" if row.leader else row.role
    reach = f" | {row.reachability}" if row.reachability else ""
    return (
        f"{row.name} | {role} | {row.status} | {row.availability}{reach} | "
        f"engine {row.engine} | {row.addr}"
    )
