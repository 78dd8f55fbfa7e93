"""Docker Swarm nodes: read-only targets (incidents and diagnosis, never acted on)."""

from __future__ import annotations

from datetime import datetime

from mcp_server.backends.swarm.engine import SwarmBackend
from mcp_server.backends.swarm.format import NodeRow
from mcp_server.drivers.base import TargetState
from mcp_server.errors import InvalidInput, NotFound


class NodeDriver:
    kind = "node"
    restartable = False

    def __init__(self, swarm: SwarmBackend) -> None:
        self.swarm = swarm

    async def _row(self, name: str) -> NodeRow:
        node = (await self.swarm.snapshot()).node(name)
        if node is None:
            raise NotFound(f"no swarm node {name!r}; call list_services(nodes=True) for names")
        return node

    async def labels(self, name: str) -> dict[str, str] | None:
        await self._row(name)
        return None

    async def state(self, name: str) -> TargetState:
        try:
            node = await self._row(name)
        except NotFound:
            return TargetState(exists=False, detail=f"node {name} is no longer in the swarm")
        reach = f", manager {node.reachability}" if node.reachability else ""
        return TargetState(
            running=node.status == "ready",
            healthy=None if node.reachability in (None, "reachable") else False,
            detail=f"{node.status}, {node.availability}{reach}",
        )

    async def restart(self, name: str) -> None:
        raise InvalidInput(f"node:{name} is read-only: OpsMedic never restarts swarm nodes")

    async def verify(self, name: str) -> tuple[bool, str]:
        state = await self.state(name)
        return state.fine, state.detail

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        raise InvalidInput(
            "a node's own logs are not readable through the swarm API; read its services' "
            "logs with tail_logs(source='service:NAME')"
        )

    async def identity(self, name: str) -> str:
        return str((await self._row(name)).id)

    async def managed(self) -> list[str]:
        return []
