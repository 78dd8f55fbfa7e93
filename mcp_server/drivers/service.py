"""Docker Swarm services: `restart` is a rolling force-update, `rollback` the engine's own.

Desired vs actual for services is the swarm watcher's (mcp_server.core.swarm): it knows the
failure rate and the update state, so `managed()` returns nothing for the generic pass.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mcp_server.backends.swarm.engine import SwarmBackend
from mcp_server.backends.swarm.format import describe
from mcp_server.backends.swarm.rules import SwarmLimits, service_fine
from mcp_server.drivers.base import TargetState
from mcp_server.errors import NotFound
from mcp_server.safety.grep import grep_lines
from mcp_server.settings import PolicySettings


class ServiceDriver:
    kind = "service"
    restartable = True

    def __init__(self, swarm: SwarmBackend, policy: PolicySettings, limits: SwarmLimits) -> None:
        self.swarm = swarm
        self.policy = policy
        self.limits = limits
        self._before: dict[str, datetime | None] = {}

    async def labels(self, name: str) -> dict[str, str] | None:
        row, _ = await self.swarm.service(name)
        return dict(row.labels)

    async def state(self, name: str) -> TargetState:
        try:
            row, tasks = await self.swarm.service(name)
        except NotFound:
            return TargetState(exists=False, detail=f"service {name} no longer exists")
        fine = service_fine(row, tasks, datetime.now(UTC), self.limits)
        up = row.running >= row.desired
        return TargetState(
            running=up,
            healthy=None if fine or not up else False,
            restarting=row.converging,  # the swarm is rolling an update or rollback itself
            detail=describe(row),
        )

    async def restart(self, name: str) -> None:
        await self._changing(name)
        await self.swarm.force_update(name)

    async def rollback(self, name: str) -> None:
        await self._changing(name)
        await self.swarm.rollback(name)

    async def _changing(self, name: str) -> None:
        """Remember when the current spec began: verify waits for the new update to begin."""
        self._before[name] = (await self.swarm.service(name))[0].changed_at

    async def verify(self, name: str) -> tuple[bool, str]:
        return await self.swarm.wait_converged(
            name,
            self.policy.verify_timeout_s,
            self.policy.verify_stable_s,
            before=self._before.pop(name, None),
        )

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        got = await self.swarm.logs(name, lines=lines, since=since)
        return grep_lines([line[:max_line_chars] for line in got], grep)

    async def identity(self, name: str) -> str:
        return str((await self.swarm.spec(name))["ID"])

    async def managed(self) -> list[str]:
        return []
