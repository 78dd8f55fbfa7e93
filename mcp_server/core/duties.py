"""Background duties: what each one is doing, and whether it still makes progress.

A duty (docker events watcher, IMAP watcher, store probe, ...) is registered with an
expected interval: how often it must show progress. It shows progress with heartbeats,
``beat(name)``, on each unit of work and on a keepalive while it waits on a healthy source;
it says ``waiting(why)`` when a dependency is unreachable. A duty that has not beaten within
``interval_s * tolerance`` is stalled: /healthz (503) and ``opsmedic status`` report it as
unhealthy, and it recovers by itself with its next beat. A waiting duty is shown as not
running but is not unhealthy: it retries by itself, and a liveness check that restarts
OpsMedic because IMAP is down would not help. Failed and stopped duties are unhealthy.

The duty a coroutine belongs to is found in a context variable that ``supervise()`` sets,
like the current span of a tracer: a backend calls the module-level ``beat()`` or
``waiting()`` without being handed the registry, and outside a duty (a tool call, a test)
they do nothing. Child tasks inherit the context, so they beat for their duty too.

``Duties`` is also a ``MutableMapping[str, str]`` of name -> status text ("running",
"stalled: ...", "waiting: ..."), the shape older readers of ``deps.tasks`` expect.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    MutableMapping,
)
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from mcp_server.errors import OpsMedicError
from mcp_server.models import utcnow

if TYPE_CHECKING:
    from mcp_server.deps import Deps

logger = logging.getLogger(__name__)
T = TypeVar("T")

State = Literal["starting", "running", "waiting", "idle", "failed", "stopped"]
RETRY_S = (1.0, 30.0)
LEASE_TTL_S = 60.0
TOLERANCE = 2.0  # a duty may be this many intervals late before it counts as stalled


@dataclass
class Duty:
    """One duty's record. `interval_s` None: a plain status (no progress expected)."""

    name: str
    interval_s: float | None
    since: datetime
    state: State = "starting"
    detail: str = ""
    last_beat: datetime | None = None
    #: Small JSON facts of the last beat (e.g. the host grading), kept in heartbeats
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DutyView:
    """What /healthz and `opsmedic status` show of a duty at one moment."""

    name: str
    state: str  # State, or "stalled" for a running duty past its deadline
    detail: str
    interval_s: float | None
    age_s: float | None  # seconds since the last progress (None: never)
    healthy: bool
    last_beat: datetime | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return f"{self.state}: {self.detail}" if self.detail else self.state

    def as_json(self) -> dict[str, Any]:
        age = None if self.age_s is None else round(self.age_s, 1)
        out = {"name": self.name, "state": self.state, "detail": self.detail,
               "interval_s": self.interval_s, "last_progress_age_s": age,
               "healthy": self.healthy}  # fmt: skip
        return out | ({"facts": self.facts} if self.facts else {})


@dataclass
class Duties(MutableMapping[str, str]):
    """The registry: every duty's state, interval and last progress."""

    clock: Callable[[], datetime] = utcnow
    tolerance: float = TOLERANCE
    _duties: dict[str, Duty] = field(default_factory=dict)

    def add(self, name: str, interval_s: float | None) -> Duty:
        """Register (or re-register) a duty; it must beat within interval_s * tolerance."""
        duty = Duty(name, interval_s, since=self.clock())
        self._duties[name] = duty
        return duty

    def beat(self, name: str, detail: str = "", facts: dict[str, Any] | None = None) -> None:
        """Progress: the duty is running (again); `detail` says what it last did; `facts`
        (small JSON) replace the duty's facts when given."""
        duty = self._duties.get(name) or self.add(name, None)
        duty.state, duty.detail, duty.last_beat = "running", detail, self.clock()
        if facts is not None:
            duty.facts = facts

    def set(self, name: str, state: State, detail: str = "") -> None:
        """A state other than progress: waiting (on a dependency), idle, failed, stopped."""
        duty = self._duties.get(name) or self.add(name, None)
        duty.state, duty.detail = state, detail

    def get_duty(self, name: str) -> Duty | None:
        return self._duties.get(name)

    def view(self, name: str, now: datetime | None = None) -> DutyView:
        return _view(self._duties[name], now or self.clock(), self.tolerance)

    def views(self, now: datetime | None = None) -> list[DutyView]:
        """Every duty, sorted by name (probes `probe:NAME` after the others)."""
        at = now or self.clock()
        names = sorted(self._duties, key=lambda n: (n.startswith("probe:"), n))
        return [_view(self._duties[n], at, self.tolerance) for n in names]

    def unhealthy(self, now: datetime | None = None) -> list[DutyView]:
        return [v for v in self.views(now) if not v.healthy]

    # --- MutableMapping[str, str]: name -> status text, for readers of deps.tasks ----------

    def __getitem__(self, name: str) -> str:
        return self.view(name).status

    def __setitem__(self, name: str, status: str) -> None:
        state, _, detail = status.partition(": ")
        if state == "running" and not detail:
            self.beat(name)
        else:
            self.set(name, state if state in _STATES else "idle", detail)  # type: ignore[arg-type]

    def __delitem__(self, name: str) -> None:
        del self._duties[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._duties))

    def __len__(self) -> int:
        return len(self._duties)


_STATES = frozenset({"starting", "running", "waiting", "idle", "failed", "stopped"})


def _view(duty: Duty, now: datetime, tolerance: float) -> DutyView:
    last = duty.last_beat or duty.since
    age = (now - last).total_seconds()
    shown_age = None if duty.last_beat is None else age
    state: str = duty.state
    detail = duty.detail
    if duty.interval_s is None:
        healthy = state not in ("failed", "stopped")
    else:
        late = age > duty.interval_s * tolerance
        # waiting on a dependency is OpsMedic doing the right thing (shown, not a 503)
        healthy = state in ("idle", "waiting") or (state in ("starting", "running") and not late)
        if late and state in ("starting", "running"):
            since = "since start" if duty.last_beat is None else f"for {age:.0f} s"
            state, detail = "stalled", f"no progress {since} (expected every {duty.interval_s:g} s)"
    return DutyView(duty.name, state, detail, duty.interval_s, shown_age, healthy,
                    duty.last_beat, dict(duty.facts))  # fmt: skip


# --- the current duty (context variable) ---------------------------------------------------

_current: contextvars.ContextVar[tuple[Duties, str] | None] = contextvars.ContextVar(
    "opsmedic_duty", default=None
)


def beat(name: str | None = None, detail: str = "", facts: dict[str, Any] | None = None) -> None:
    """Record progress for duty `name` (default: the current duty); a no-op outside duties."""
    current = _current.get()
    if current is not None:
        current[0].beat(name or current[1], detail, facts)


def waiting(why: str, name: str | None = None) -> None:
    """The current duty (or `name`) waits on an unreachable dependency: `why` says which."""
    current = _current.get()
    if current is not None:
        current[0].set(name or current[1], "waiting", why)


def register(name: str, interval_s: float | None) -> None:
    """Register a further duty (e.g. one per probe) in the current duty's registry."""
    current = _current.get()
    if current is not None:
        current[0].add(name, interval_s)


async def keepalive(items: AsyncIterable[T], every_s: float) -> AsyncIterator[T]:
    """Yield `items`, beating on each one and every `every_s` while the consumer waits for
    the next: a quiet event source is not a stalled duty, a consumer stuck elsewhere is."""
    source = aiter(items)
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            beat()
            if done:
                item, pending = pending.result(), None
                yield item
    except StopAsyncIteration:
        return
    finally:
        if pending is not None:
            pending.cancel()


# --- running duties ------------------------------------------------------------------------


async def supervise(
    duties: Duties,
    name: str,
    make: Callable[[], Awaitable[object]],
    *,
    interval_s: float | None,
) -> None:
    """Run duty `name` forever: retry with backoff when it fails; keep its state current.
    `interval_s`: how often it must beat (None: a plain status, no progress expected)."""
    duties.add(name, interval_s)
    _current.set((duties, name))  # this task's context: beat() from inside finds the duty
    delay = RETRY_S[0]
    while True:
        try:
            await make()
            duties.set(name, "idle", "source ended")
            delay = RETRY_S[0]
        except asyncio.CancelledError:
            duties.set(name, "stopped")
            raise
        except OpsMedicError as exc:
            duties.set(name, "waiting", f"{exc} (retry in {delay:.0f} s)")
            logger.info("%s waiting: %s", name, exc)
        except Exception as exc:
            duties.set(name, "failed", f"{type(exc).__name__}: {exc}"[:200])
            logger.exception("%s failed; retrying in %.0fs", name, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_S[1])


async def every(interval_s: float, step: Callable[[], Awaitable[object]]) -> None:
    """Run a periodic duty forever, beating after each step (failures: supervise())."""
    while True:
        await step()
        beat()
        await asyncio.sleep(interval_s)


async def with_lease(deps: Deps, name: str, duty: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Run an exclusive duty (IMAP watcher, hub connection) only while holding its lease in
    the store, so only one of several OpsMedic processes on a shared store does it."""
    holder = deps.holder
    current = _current.get()
    shown = current[1] if current else name
    while not await deps.store.acquire_lease(name, holder, LEASE_TTL_S, utcnow()):
        deps.duties.set(shown, "idle", "another OpsMedic holds the lease")
        await asyncio.sleep(LEASE_TTL_S / 3)
    deps.duties.beat(shown, "lease taken")

    async def renew() -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            if not await deps.store.acquire_lease(name, holder, LEASE_TTL_S, utcnow()):
                raise OpsMedicError(f"lost the {name} lease to another OpsMedic")

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(renew())
            tg.create_task(duty())
    finally:
        await deps.store.release_lease(name, holder)
