"""Pure parsing of `GET /containers/{id}/json` into bounded models (no I/O).

ContainerState is what restart verification polls; ContainerDetail is what an LLM reads when
it diagnoses a container: state, exit code, OOMKilled, restarts, the last health checks,
restart policy, limits, mounts and networks, each field capped in size.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field

from mcp_server.backends.docker.format import (
    Health,
    Model,
    as_health,
    clip,
    parse_docker_time,
    short_id,
)

OUTPUT_MAX = 200  # characters kept of one health-check output, error or label value
MAX_LABELS = 40
MAX_LIST = 20  # mounts, networks


class ContainerState(Model):
    """The runtime state used to verify a restart (cheap: one inspect)."""

    status: str
    running: bool = False
    restarting: bool = False
    paused: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int | None = None
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime | None = None
    health: Health = "none"
    restart_count: int = 0


class HealthRun(Model):
    ended_at: datetime | None = None
    exit_code: int | None = None
    output: str = ""


class HealthInfo(Model):
    status: Health = "none"
    failing_streak: int = 0
    log: list[HealthRun] = Field(default_factory=list)  # last 3 checks, oldest first


class Limits(Model):
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None
    nano_cpus: int | None = None
    pids: int | None = None


class ContainerDetail(Model):
    """Bounded inspect result: enough for a diagnosis, never the whole document."""

    name: str
    id: str
    image: str
    image_id: str
    command: str
    state: ContainerState
    health: HealthInfo | None = None
    restart_policy: str = "no"  # no, always, unless-stopped, on-failure:N
    labels: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    mounts: list[str] = Field(default_factory=list)  # "bind /src -> /dst rw"
    networks: list[str] = Field(default_factory=list)

    def render(self) -> str:
        """A few short lines an LLM can read; the model itself has the same facts."""
        s = self.state
        head = f"{self.name} ({self.id}) {s.status}"
        if not s.running:
            head += f" exit={s.exit_code}"
        flags = [f for f, on in (("OOMKilled", s.oom_killed), ("dead", s.dead)) if on]
        lines = [
            head + "".join(f" {f}" for f in flags) + f" restarts={s.restart_count}",
            f"image {self.image}  cmd {clip(self.command, 60)}  restart={self.restart_policy}",
            f"started {_iso(s.started_at)}  finished {_iso(s.finished_at)}"
            + (f"  error {clip(s.error, 80)}" if s.error else ""),
        ]
        if self.health:
            h = self.health
            lines.append(f"health {h.status} failing_streak={h.failing_streak}")
            lines += [f"  {_iso(r.ended_at)} exit={r.exit_code} {r.output}" for r in h.log]
        lim = self.limits
        lines.append(
            f"limits mem={lim.memory_bytes} swap={lim.memory_swap_bytes} "
            f"nano_cpus={lim.nano_cpus} pids={lim.pids}"
        )
        if self.mounts:
            lines.append("mounts " + "; ".join(self.mounts))
        lines.append("networks " + (",".join(self.networks) or "-"))
        if self.labels:
            lines.append("labels " + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items())))
        return "\n".join(clip(line, 300) for line in lines)


def _iso(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def state_from_inspect(doc: Mapping[str, Any]) -> ContainerState:
    st = doc.get("State") or {}
    return ContainerState(
        status=str(st.get("Status") or ""),
        running=bool(st.get("Running")),
        restarting=bool(st.get("Restarting")),
        paused=bool(st.get("Paused")),
        oom_killed=bool(st.get("OOMKilled")),
        dead=bool(st.get("Dead")),
        pid=int(st.get("Pid") or 0),
        exit_code=st.get("ExitCode"),
        error=clip(str(st.get("Error") or ""), OUTPUT_MAX),
        started_at=parse_docker_time(st.get("StartedAt")),
        finished_at=parse_docker_time(st.get("FinishedAt")),
        created_at=parse_docker_time(doc.get("Created")),
        health=as_health((st.get("Health") or {}).get("Status")),
        restart_count=int(doc.get("RestartCount") or 0),
    )


def _health_info(raw: Mapping[str, Any] | None) -> HealthInfo | None:
    if not raw:
        return None
    runs = [
        HealthRun(
            ended_at=parse_docker_time(r.get("End")),
            exit_code=r.get("ExitCode"),
            output=clip(str(r.get("Output") or ""), OUTPUT_MAX),
        )
        for r in (raw.get("Log") or [])[-3:]
    ]
    return HealthInfo(
        status=as_health(raw.get("Status")),
        failing_streak=int(raw.get("FailingStreak") or 0),
        log=runs,
    )


def _mount_line(m: Mapping[str, Any]) -> str:
    source = m.get("Source") or m.get("Name") or ""
    mode = "rw" if m.get("RW", True) else "ro"
    return clip(f"{m.get('Type', '?')} {source} -> {m.get('Destination', '?')} {mode}", 120)


def _restart_policy(raw: Mapping[str, Any] | None) -> str:
    name = (raw or {}).get("Name") or "no"
    retries = (raw or {}).get("MaximumRetryCount") or 0
    return f"{name}:{retries}" if name == "on-failure" and retries else str(name)


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


def detail_from_inspect(doc: Mapping[str, Any]) -> ContainerDetail:
    """Bounded ContainerDetail from a `GET /containers/{id}/json` document."""
    config = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    labels = dict(sorted((config.get("Labels") or {}).items())[:MAX_LABELS])
    networks = ((doc.get("NetworkSettings") or {}).get("Networks")) or {}
    command = " ".join([str(doc.get("Path") or ""), *map(str, doc.get("Args") or [])])
    return ContainerDetail(
        name=str(doc.get("Name") or "").lstrip("/"),
        id=short_id(str(doc.get("Id") or "")),
        image=str(config.get("Image") or ""),
        image_id=short_id(str(doc.get("Image") or "")),
        command=clip(command.strip(), OUTPUT_MAX),
        state=state_from_inspect(doc),
        health=_health_info((doc.get("State") or {}).get("Health")),
        restart_policy=_restart_policy(host.get("RestartPolicy")),
        labels={k: clip(str(v), OUTPUT_MAX) for k, v in labels.items()},
        limits=Limits(
            memory_bytes=_positive(host.get("Memory")),
            memory_swap_bytes=_positive(host.get("MemorySwap")),
            nano_cpus=_positive(host.get("NanoCpus")),
            pids=_positive(host.get("PidsLimit")),
        ),
        mounts=[_mount_line(m) for m in (doc.get("Mounts") or [])[:MAX_LIST]],
        networks=sorted(networks)[:MAX_LIST],
    )


def running_verdict(
    state: ContainerState, need_healthy: bool, stable_s: float, now: datetime
) -> tuple[bool, bool, str]:
    """(ok, done, detail) for DockerEngine.wait_running; done=True means failed for good."""
    if state.status in ("exited", "dead"):
        oom = " (OOMKilled)" if state.oom_killed else ""
        return False, True, f"{state.status} with code {state.exit_code}{oom}"
    if not state.running or state.restarting:
        return False, False, state.status
    if need_healthy and state.health == "unhealthy":
        return False, True, "running but unhealthy"
    if need_healthy and state.health == "starting":
        return False, False, "running, health check starting"
    up = (now - state.started_at).total_seconds() if state.started_at else 0.0
    if up < stable_s:
        return False, False, f"running for {up:.1f}s of {stable_s:g}s"
    health = "" if state.health == "none" else f", {state.health}"
    return True, False, f"running (pid {state.pid}{health}, restarts {state.restart_count})"
