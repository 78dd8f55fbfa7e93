"""A third-party target kind, as a separate package would ship it: one driver, one factory.

Registered in the test through a real entry point (group ``opsmedic.drivers``), so the server
finds it exactly as it would find an installed plugin."""

from __future__ import annotations

from typing import Any

from mcp_server.drivers.base import TargetState


class EchoDriver:
    """`echo:NAME` targets: in-memory services that are up or down."""

    kind = "echo"
    restartable = True

    def __init__(self) -> None:
        self.up: dict[str, bool] = {"svc": False}
        self.restarts: list[str] = []

    async def labels(self, name: str) -> dict[str, str] | None:
        return {"opsmedic.managed": "true"}

    async def state(self, name: str) -> TargetState:
        if name not in self.up:
            return TargetState(exists=False, detail="no such echo")
        return TargetState(running=self.up[name], detail="up" if self.up[name] else "down")

    async def restart(self, name: str) -> None:
        self.restarts.append(name)
        self.up[name] = True

    async def verify(self, name: str) -> tuple[bool, str]:
        return self.up.get(name, False), "echo answers"

    async def logs(self, name: str, lines: int, **_: Any) -> tuple[list[str], str | None]:
        return [f"echo {name} is {'up' if self.up.get(name) else 'down'}"][-lines:], None

    async def identity(self, name: str) -> str:
        return f"echo:{name}"

    async def managed(self) -> list[str]:
        return list(self.up)


INSTANCE = EchoDriver()


def make(_deps: Any) -> EchoDriver:
    return INSTANCE
