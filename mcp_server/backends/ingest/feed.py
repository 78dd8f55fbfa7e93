"""Micro-batching between a WebSocket reader and the store writer (client and server mode).

The reader puts parsed frames in as they arrive; the writer takes batches of up to
`max_events` events, waiting at most `wait_s` after the first one for more to arrive. The
reader is paused (TCP backpressure to the sender) while `max_pending` events are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mcp_server.backends.ingest.schema import IngestEvent, Rejection

T = TypeVar("T")


@dataclass
class IngestBatch:
    """What a reader hands to the store side: valid events (in arrival order) and rejections.

    source names where they came from, e.g. `hub:wss://hub.example/events` or
    `ingest:127.0.0.1:51514`, for counting and auditing rejections.
    """

    events: list[IngestEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    source: str = ""


#: The store side: called once per batch; raising means "not stored, deliver again".
OnBatch = Callable[[IngestBatch], Awaitable[object]]


class Feed(Generic[T]):
    """A bounded queue whose consumer takes size-bounded, time-bounded batches."""

    def __init__(self, max_events: int = 500, wait_s: float = 0.05, max_pending: int = 20_000):
        self.max_events = max_events
        self.wait_s = wait_s
        self.max_pending = max_pending
        self._items: deque[tuple[T, int]] = deque()
        self._pending = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def put(self, item: T, size: int) -> None:
        """Add an item worth `size` events; waits while the feed is full."""
        while self._pending >= self.max_pending and not self._closed:
            self._room.clear()
            await self._room.wait()
        self._items.append((item, size))
        self._pending += size
        self._ready.set()

    def close(self) -> None:
        """No more items; take() returns what is left, then []."""
        self._closed = True
        self._ready.set()
        self._room.set()

    async def take(self) -> list[T]:
        """Next batch; [] only when the feed is closed and empty."""
        while not self._items and not self._closed:
            self._ready.clear()
            await self._ready.wait()
        if self._pending < self.max_events and not self._closed and self.wait_s > 0:
            await self._linger()
        batch: list[T] = []
        taken = 0
        while self._items and (not batch or taken + self._items[0][1] <= self.max_events):
            item, size = self._items.popleft()
            batch.append(item)
            taken += size
        self._pending -= taken
        if self._pending < self.max_pending:
            self._room.set()
        return batch

    async def _linger(self) -> None:
        """Wait up to wait_s for the batch to fill (waiting on an event loses no items)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while self._pending < self.max_events and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), remaining)
