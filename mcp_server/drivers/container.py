"""Containers on one Docker engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp_server.drivers.base import TargetState
from mcp_server.errors import NotFound
from mcp_server.safety.grep import grep_lines
from mcp_server.settings import PolicySettings

#: How long a container with its own restart policy is left to Docker after it exits.
DOCKER_GRACE_S = 5.0


class ContainerDriver:
    kind = "container"
    restartable = True

    def __init__(self, docker: Any, policy: PolicySettings) -> None:
        self.docker = docker
        self.policy = policy

    async def labels(self, name: str) -> dict[str, str] | None:
        return dict((await self.docker.inspect_container(name)).labels)

    async def state(self, name: str) -> TargetState:
        try:
            detail = await self.docker.inspect_container(name)
        except NotFound:
            return TargetState(exists=False, detail=f"container {name} no longer exists")
        st = detail.state
        if st.status == "removing" or st.dead:
            return TargetState(exists=False, detail=f"container {name} is being removed")
        healthy = None if st.health in (None, "none", "starting") else st.health == "healthy"
        how = st.status if st.exit_code in (None, 0) else f"{st.status} (exit {st.exit_code})"
        return TargetState(
            running=bool(st.running) and not st.restarting,
            healthy=healthy,
            restarting=bool(st.restarting) or _docker_will_restart(detail),
            down_since=None if st.running else (st.finished_at or st.created_at),
            detail=how + (f", {st.health}" if healthy is not None else ""),
        )

    async def restart(self, name: str) -> None:
        await self.docker.restart(name, timeout_s=10)

    async def verify(self, name: str) -> tuple[bool, str]:
        state = await self.docker.container_state(name)
        ok, detail = await self.docker.wait_running(
            name,
            timeout_s=self.policy.verify_timeout_s,
            need_healthy=state.health not in (None, "none"),
            stable_s=self.policy.verify_stable_s,
        )
        return bool(ok), str(detail)

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        got = await self.docker.logs(name, lines=lines, since=since)
        return grep_lines(got, grep)

    async def identity(self, name: str) -> str:
        return str((await self.docker.inspect_container(name)).id)

    async def managed(self) -> list[str]:
        rows = await self.docker.list_containers(self.policy.selector or None)
        return [row.name for row in rows]


def _docker_will_restart(detail: Any) -> bool:
    """Docker's own restart policy is about to bring a container that just exited back:
    leave it to Docker first. After the grace (a `docker stop` is never restarted by Docker,
    and a policy can give up) OpsMedic acts."""
    st, policy = detail.state, detail.restart_policy
    if st.running or policy == "no" or st.finished_at is None:
        return False
    if policy.startswith("on-failure") and st.exit_code in (0, None):
        return False
    return (datetime.now(UTC) - st.finished_at).total_seconds() < DOCKER_GRACE_S
