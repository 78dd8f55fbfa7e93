"""What the healing core needs from one kind of target, and nothing more.

A driver translates its backend's view (an engine inspect, a supervisor status, a job row)
into `TargetState`, and performs and verifies the one action the core asks for. The core
never branches on the kind: it asks the registry for the driver and talks to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class TargetState(BaseModel):
    """Actual state of a target, compared with its desired state (running)."""

    model_config = ConfigDict(frozen=True)

    exists: bool = True
    running: bool = False
    #: None when the target has no health check; False when it reports unhealthy.
    healthy: bool | None = None
    #: Its own supervisor (Docker's restart policy) is bringing it back: leave it to that.
    restarting: bool = False
    #: when it went down (None: running, or unknown): events handle fresh failures first
    down_since: datetime | None = None
    detail: str = ""

    @property
    def fine(self) -> bool:
        """Up, and not reported unhealthy: nothing to heal."""
        return self.exists and self.running and self.healthy is not False


@runtime_checkable
class TargetDriver(Protocol):
    #: The `kind` in `kind:name`.
    kind: str
    #: Whether `restart` is supported (read-only kinds say False).
    restartable: bool

    async def labels(self, name: str) -> dict[str, str] | None:
        """The target's labels for policy scope (None: the kind has none). NotFound if absent."""
        ...

    async def state(self, name: str) -> TargetState:
        """Actual state right now; a vanished target is `exists=False`, not an exception."""
        ...

    async def restart(self, name: str) -> None:
        """Bring the target back (stop if needed, then start); verification is separate."""
        ...

    async def verify(self, name: str) -> tuple[bool, str]:
        """After an action: did it come back and stay up? (ok, what was seen)."""
        ...

    async def logs(
        self,
        name: str,
        lines: int,
        *,
        since: datetime | None = None,
        grep: str | None = None,
        max_line_chars: int = 2000,
    ) -> tuple[list[str], str | None]:
        """Its newest `lines` log lines, oldest first (grep: an RE2 pattern), and a note
        about anything cut."""
        ...

    async def identity(self, name: str) -> str:
        """What an approval or a lease is bound to: changes when the target is recreated."""
        ...

    async def managed(self) -> list[str]:
        """Names this driver watches with a desired state of running (reconcile pass)."""
        ...
