"""The event feed behind `wait_for_events`: stored events plus a wake-up for long-pollers.

Events are stored first (so other processes on a shared store see them too), then local
waiters are woken. Waiters also re-check the store every `poll_s`, which is how events written
by *another* OpsMedic process on the same store reach this one.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from mcp_server.models import Event
from mcp_server.store.base import Store


class EventBus:
    def __init__(self, store: Store, poll_s: float = 0.5) -> None:
        self._store = store
        self._poll_s = poll_s
        self._changed = anyio.Event()

    async def publish(self, events: Sequence[Event]) -> list[Event]:
        """Store events (idempotent by id) and wake long-pollers. Returns the new ones."""
        added = await self._store.add_events(events)
        if added:
            self._changed.set()
            self._changed = anyio.Event()
        return added

    async def wait(self, cursor: int, timeout_s: float, limit: int = 100) -> list[Event]:
        """Events after cursor; waits up to timeout_s for the first one to arrive."""
        with anyio.move_on_after(max(0.0, timeout_s)):
            while True:
                changed = self._changed
                found = await self._store.events_after(cursor, limit)
                if found:
                    return found
                with anyio.move_on_after(self._poll_s):
                    await changed.wait()
        return []

    async def head(self) -> int:
        return await self._store.last_event_seq()
