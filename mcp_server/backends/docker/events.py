"""Docker container events: a small model, pure classification, and a threaded follower.

The engine's `/events` stream is a blocking HTTP response, so `follow_events` reads it in a
dedicated daemon thread (not an anyio worker: it would hold a worker token forever) and hands
each event to the event loop with `call_soon_threadsafe` (asyncio, which the server runs
on). The thread reconnects with backoff when the engine drops the stream, resuming from the
last event it saw, and ends when the consumer stops iterating (the HTTP response is shut
down so the blocking read returns) or its event loop closes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.backends.docker.format import Health, as_health, short_id
from mcp_server.core import duties

logger = logging.getLogger(__name__)

#: Container actions we follow; the engine sends health as "health_status: <status>".
ACTIONS = ("die", "oom", "health_status", "start", "restart", "kill", "destroy")
_NOT_LABELS = frozenset({"name", "image", "exitCode", "signal", "execDuration"})

SymptomKind = Literal["died", "stopped", "oom", "unhealthy", "restart_loop"]


class DockerEvent(BaseModel):
    """One container event. `time` is Unix seconds with the engine's nanosecond precision."""

    model_config = ConfigDict(extra="forbid")

    time: float
    time_nano: int = 0
    action: str  # die, oom, health_status, start, restart, kill
    name: str
    id: str  # 12 characters
    image: str = ""
    exit_code: int | None = None  # die
    signal: int | None = None  # kill
    health: Health | None = None  # health_status
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_event(raw: Mapping[str, Any]) -> DockerEvent | None:
    """DockerEvent from one decoded `/events` message; None for anything we do not follow."""
    if raw.get("Type", "container") != "container":
        return None
    action = str(raw.get("Action") or raw.get("status") or "")
    health: Health | None = None
    if action.startswith("health_status"):
        health = as_health(action.partition(":")[2].strip())
        action = "health_status"
    if action not in ACTIONS:
        return None
    actor = raw.get("Actor") or {}
    attrs: Mapping[str, str] = actor.get("Attributes") or {}
    nano = _int(raw.get("timeNano")) or (_int(raw.get("time")) or 0) * 1_000_000_000
    return DockerEvent(
        time=nano / 1e9,
        time_nano=nano,
        action=action,
        name=str(attrs.get("name") or ""),
        id=short_id(str(actor.get("ID") or raw.get("id") or "")),
        image=str(attrs.get("image") or ""),
        exit_code=_int(attrs.get("exitCode")),
        signal=_int(attrs.get("signal")),
        health=health,
        labels={k: str(v) for k, v in attrs.items() if k not in _NOT_LABELS},
    )


# --- classification (pure) -------------------------------------------------------------


class Symptom(BaseModel):
    """What a detector should open (or count on) an incident for."""

    model_config = ConfigDict(extra="forbid")

    kind: SymptomKind
    detail: str


@dataclass
class EventHistory:
    """Recent starts, kills and OOMs per container id, fed by `record()`; read by classify."""

    window_s: float = 60.0
    starts: dict[str, list[float]] = field(default_factory=dict)
    kills: dict[str, float] = field(default_factory=dict)
    kill_signals: dict[str, int | None] = field(default_factory=dict)
    ooms: dict[str, float] = field(default_factory=dict)

    def record(self, event: DockerEvent) -> None:
        """Remember `event` (call after classify) and forget what no rule needs any more."""
        if event.action == "start":
            # a new run: an earlier kill or OOM no longer explains the next die
            self.kills.pop(event.id, None)
            self.ooms.pop(event.id, None)
            self.starts.setdefault(event.id, []).append(event.time)
        elif event.action == "kill":
            self.kills[event.id] = event.time
            self.kill_signals[event.id] = event.signal
        elif event.action == "oom":
            self.ooms[event.id] = event.time
        self._forget(event.time)

    def _forget(self, now: float) -> None:
        # keeps memory flat on a long-running server that sees many short-lived containers
        keep = max(self.window_s, INTENT_S)
        for cid in list(self.starts):
            recent = [t for t in self.starts[cid] if now - t < self.window_s]
            if recent:
                self.starts[cid] = recent
            else:
                del self.starts[cid]
        for seen in (self.kills, self.ooms):
            for cid in [c for c, t in seen.items() if now - t >= keep]:
                del seen[cid]
        for cid in [c for c in self.kill_signals if c not in self.kills]:
            del self.kill_signals[cid]


LOOP_STARTS = 3
INTENT_S = 30.0  # a die this soon after a kill was asked for (stop/restart), not a crash


SIGNALS = {9: "SIGKILL: docker kill or kill -9", 15: "SIGTERM: docker stop", 2: "SIGINT"}


def classify(
    event: DockerEvent,
    recent: EventHistory,
    *,
    loop_starts: int = LOOP_STARTS,
    managed: bool = False,
) -> Symptom | None:
    """Map an event to a symptom, or None when it is not a failure.

    - die -> "died" with the exit code, or "stopped" when someone killed it first (docker
      stop / kill). A `managed` container should be running, so however it went down is a
      symptom; for others a die that follows a kill was asked for and is ignored. A die
      that follows an oom was reported as "oom" already;
    - oom -> "oom"; health_status unhealthy -> "unhealthy";
    - start -> "restart_loop" when this is the `loop_starts`-th start of the container
      within `recent.window_s` seconds (counting this one). The caller leaves out the
      starts OpsMedic caused itself, so a loop is judged from the target's own crashes.
    """
    who = event.name or event.id
    if event.action == "oom":
        return Symptom(kind="oom", detail=f"{who} was killed by the kernel OOM killer")
    if event.action == "health_status" and event.health == "unhealthy":
        return Symptom(kind="unhealthy", detail=f"{who} health check reports unhealthy")
    if event.action == "die":
        return _classify_die(event, recent, who, managed)
    if event.action == "start":
        earlier = [
            t for t in recent.starts.get(event.id, []) if 0 <= event.time - t < recent.window_s
        ]
        if len(earlier) + 1 >= loop_starts:
            return Symptom(
                kind="restart_loop",
                detail=f"{who} started {len(earlier) + 1} times in {recent.window_s:.0f}s",
            )
    return None


def _recent(seen: float | None, now: float) -> bool:
    return seen is not None and 0 <= now - seen < INTENT_S


def _classify_die(
    event: DockerEvent, recent: EventHistory, who: str, managed: bool
) -> Symptom | None:
    if _recent(recent.ooms.get(event.id), event.time):
        return None
    if _recent(recent.kills.get(event.id), event.time):
        if not managed:
            return None
        signal = recent.kill_signals.get(event.id)
        how = SIGNALS.get(signal or 0, f"signal {signal}")
        return Symptom(
            kind="stopped", detail=f"{who} was stopped ({how}), exit code {event.exit_code}"
        )
    hint = ""
    if event.exit_code == 137:  # SIGKILL nobody asked for: the OOM killer, or kill -9
        hint = " (SIGKILL: the OOM killer or kill -9; inspect_container shows oom_killed)"
    return Symptom(kind="died", detail=f"{who} exited with code {event.exit_code}{hint}")


# --- following the stream (threaded) ---------------------------------------------------


class _Stream(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


#: Opens one events stream: (since "sec.nanos" or None) -> a closable iterator of dicts.
OpenStream = Callable[[str | None], _Stream]


def _since_param(nano: int) -> str:
    # The engine reads "seconds.nanoseconds"; a float's decimals would be taken as nanos.
    return f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"


class _Stopped(Exception):
    """The consumer is gone (stopped, or its event loop closed): end the reader thread."""


class _Follower:
    """Runs in its own thread: read, reconnect with backoff, deliver, stop on request.

    Delivery never waits on the event loop (a loop that closes mid-handover would block
    the thread forever): events go through `call_soon_threadsafe` into an asyncio queue, and
    a semaphore of `buffer` slots, released by the consumer, gives back-pressure instead.
    """

    def __init__(
        self,
        open_stream: OpenStream,
        since: float | None,
        queue: asyncio.Queue[DockerEvent],
        buffer: int,
        backoff: tuple[float, float],
    ) -> None:
        self._open = open_stream
        # where a reconnect resumes (last event seen, else first connect); dedupe state
        self._resume_nano = int(since * 1e9) if since is not None else None
        self._last_nano: int | None = None
        self._seen: set[tuple[int, str, str]] = set()  # events at _last_nano
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self.slots = threading.Semaphore(buffer)
        self._backoff = backoff
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: _Stream | None = None
        self.connected = False  # a stream is open (read by the consumer's keepalive)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            with suppress(Exception):
                stream.close()

    def run(self) -> None:
        delay = self._backoff[0]
        try:
            while not self._stop.is_set():
                if self._follow_once():
                    delay = self._backoff[0]
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self._backoff[1])
        except _Stopped:
            pass

    def _follow_once(self) -> bool:
        """Read one connection until it ends; True when it connected at all."""
        since = _since_param(self._resume_nano) if self._resume_nano is not None else None
        try:
            stream = self._open(since)
        except Exception as exc:
            logger.warning("docker events: cannot connect (%s); retrying", exc)
            return False
        if self._resume_nano is None:
            self._resume_nano = time.time_ns()
        with self._lock:
            if self._stop.is_set():
                stream.close()
                return True
            self._stream = stream
            self.connected = True
        try:
            for raw in stream:
                self._deliver(raw)
        except _Stopped:
            raise
        except Exception as exc:
            if not self._stop.is_set():
                logger.warning("docker events: stream broke (%s); reconnecting", exc)
        finally:
            with self._lock:
                self._stream, self.connected = None, False
            with suppress(Exception):
                stream.close()
        if not self._stop.is_set():
            logger.info("docker events: stream ended; reconnecting")
        return True

    def _deliver(self, raw: Mapping[str, Any]) -> None:
        nano = _int(raw.get("timeNano")) or 0
        key = (nano, str(raw.get("id") or ""), str(raw.get("Action") or ""))
        last = self._last_nano
        if last is not None and (nano < last or (nano == last and key in self._seen)):
            return  # replayed after a reconnect
        if last is None or nano > last:
            self._last_nano, self._resume_nano, self._seen = nano, nano, set()
        self._seen.add(key)
        event = parse_event(raw)
        if event is None:
            return
        while not self.slots.acquire(timeout=0.2):
            if self._stop.is_set():
                raise _Stopped
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError as exc:  # the event loop is closed
            raise _Stopped from exc


async def follow_events(
    open_stream: OpenStream,
    since: float | None = None,
    *,
    buffer: int = 256,
    backoff: tuple[float, float] = (0.5, 30.0),
    keepalive_s: float = 5.0,
) -> AsyncGenerator[DockerEvent, None]:
    """Yield container events forever, reconnecting on drops; stop by leaving the loop.

    The reader thread starts at the first iteration: pass `since` (e.g. time.time() taken
    before the action you want to observe) so nothing between creation and that is lost.
    Use `async with contextlib.aclosing(follow_events(...)) as events:` (or cancel the
    task) so the reader thread is told to stop as soon as the consumer is done.
    Inside a duty (core.duties) it beats on each event and every `keepalive_s` while a
    stream is open, and marks the duty waiting while the engine cannot be reached.
    """
    queue: asyncio.Queue[DockerEvent] = asyncio.Queue()
    follower = _Follower(open_stream, since, queue, buffer, backoff)
    thread = threading.Thread(target=follower.run, name="docker-events", daemon=True)
    thread.start()
    getter: asyncio.Future[DockerEvent] | None = None  # kept across keepalives: no loss
    try:
        while True:
            getter = getter or asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter}, timeout=keepalive_s)
            if not done:
                _keepalive(follower.connected)
                continue
            event, getter = getter.result(), None
            follower.slots.release()
            duties.beat()
            yield event
    finally:
        if getter is not None:
            getter.cancel()
        follower.stop()


def _keepalive(connected: bool) -> None:
    if connected:
        duties.beat()
    else:
        duties.waiting("docker engine unreachable; reconnecting")
