"""Processes OpsMedic itself supervises (`[[processes]]`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio

from mcp_server.backends.logfiles import atail_file
from mcp_server.drivers.base import TargetState
from mcp_server.errors import NotFound
from mcp_server.settings import PolicySettings


class ProcessDriver:
    kind = "process"
    restartable = True

    def __init__(self, supervisor: Any, policy: PolicySettings) -> None:
        self.supervisor = supervisor
        self.policy = policy

    async def labels(self, name: str) -> dict[str, str] | None:
        self.supervisor.status(name)  # NotFound for a name it does not supervise
        return None

    async def state(self, name: str) -> TargetState:
        try:
            st = self.supervisor.status(name)
        except NotFound:
            return TargetState(exists=False, detail=f"no managed process {name}")
        if st.running:
            return TargetState(running=True, detail=f"running as pid {st.pid}")
        return TargetState(detail=f"exited (code {st.exit_code}, signal {st.signal})")

    async def restart(self, name: str) -> None:
        await self.supervisor.restart(name)

    async def verify(self, name: str) -> tuple[bool, str]:
        stable_s = self.policy.verify_stable_s
        await anyio.sleep(stable_s)
        st = self.supervisor.status(name)
        if st.running:
            return True, f"running as pid {st.pid} for {stable_s:g}s"
        return False, f"exited again (code {st.exit_code}, signal {st.signal})"

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        path = self.supervisor.log_path(name)
        got = await atail_file(path, lines, grep=grep, since=since, max_line_chars=max_line_chars)
        return got.lines, got.note

    async def identity(self, name: str) -> str:
        return f"process:{name}"

    async def managed(self) -> list[str]:
        return list(self.supervisor.names())
