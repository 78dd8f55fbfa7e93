"""Containers on one Docker engine."""

from __future__ import annotations

from typing import Any

from mcp_server.drivers.base import TargetState
from mcp_server.errors import NotFound
from mcp_server.settings import PolicySettings


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
            st = await self.docker.container_state(name)
        except NotFound:
            return TargetState(exists=False, detail=f"container {name} no longer exists")
        healthy = None if st.health in (None, "none", "starting") else st.health == "healthy"
        how = st.status if st.exit_code in (None, 0) else f"{st.status} (exit {st.exit_code})"
        return TargetState(
            running=bool(st.running) and not st.restarting,
            healthy=healthy,
            restarting=bool(st.restarting),
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

    async def identity(self, name: str) -> str:
        return str((await self.docker.inspect_container(name)).id)

    async def managed(self) -> list[str]:
        rows = await self.docker.list_containers(self.policy.selector or None)
        return [row.name for row in rows]
