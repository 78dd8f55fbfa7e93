"""Supervise configured commands: start, stop, restart, inspect, and report their exits.

Each process runs in its own session (so its own process group): stop() signals the whole
group, SIGTERM first and SIGKILL after the timeout, so children die with their parent.
Output (stdout and stderr together) is appended raw to `<log_dir>/<name>.log`, with one
`[opsmedic]` marker line per start and exit so `tail_logs process:NAME` shows the history.

Exits are observed by one `await proc.wait()` task per running process and published to
`subscribe()` iterators and `on_exit()` callbacks. The supervisor never restarts anything by
itself: the policy layer reads the exits and decides.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType

import psutil
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.errors import ConfigError, NotFound, Unavailable
from mcp_server.models import utcnow
from mcp_server.settings import ProcessSpec

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
ExitCallback = Callable[["ProcessExit"], None]

KILL_WAIT_S = 5.0  # after SIGKILL; only a process stuck in the kernel outlives this
GROUP_GRACE_S = 2.0  # for leftovers of a group whose leader is gone
MAX_LOG_BYTES = 10 * 1024 * 1024  # rotated to <name>.log.1 at the next start


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProcessStatus(_Model):
    name: str
    pid: int | None = None
    running: bool = False
    exit_code: int | None = None  # None while running, never started, or killed by a signal
    signal: str | None = None  # e.g. SIGKILL when a signal ended it
    restarts: int = 0  # starts after the first one
    started_at: datetime | None = None
    exited_at: datetime | None = None
    argv: list[str] = Field(default_factory=list)
    last_error: str | None = None  # why the last start failed


class ProcessDetail(ProcessStatus):
    cwd: str | None = None
    env_keys: list[str] = Field(default_factory=list)  # values are never shown
    log_path: str
    restart_policy: str = "never"  # informational, for the policy layer
    pgid: int | None = None
    cpu_percent: float | None = None  # since the previous inspect (or start)
    rss_bytes: int | None = None
    memory_percent: float | None = None
    children: int | None = None


class ProcessExit(_Model):
    """A managed process ended. `requested` is True when stop()/restart()/close() ended it."""

    name: str
    pid: int
    exit_code: int | None
    signal: str | None
    at: datetime
    requested: bool
    runtime_s: float


@dataclass
class _Managed:
    spec: ProcessSpec
    proc: asyncio.subprocess.Process | None = None
    ps: psutil.Process | None = None
    watch: asyncio.Task[None] | None = None
    started_at: datetime | None = None
    started_mono: float = 0.0
    exited_at: datetime | None = None
    exit_code: int | None = None
    signal: str | None = None
    starts: int = 0
    last_error: str | None = None
    stopping: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class ExitSubscription:
    """Async iterator of ProcessExit; ends when closed (or the supervisor closes)."""

    def __init__(self, owner: ProcessSupervisor, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[ProcessExit | None] = asyncio.Queue(maxsize)

    def __aiter__(self) -> ExitSubscription:
        return self

    async def __anext__(self) -> ProcessExit:
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def _put(self, item: ProcessExit | None) -> None:
        if self._queue.full():  # a slow reader loses the oldest exit, not the newest
            self._queue.get_nowait()
            logger.warning("process exit subscriber is slow; dropped the oldest exit")
        self._queue.put_nowait(item)

    def close(self) -> None:
        self._owner._subs.discard(self)
        self._put(None)

    async def __aenter__(self) -> ExitSubscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ProcessSupervisor:
    """Starts and stops the configured processes and publishes their exits."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        log_dir: Path,
        clock: Clock = utcnow,
        *,
        max_log_bytes: int = MAX_LOG_BYTES,
        group_grace_s: float = GROUP_GRACE_S,
    ) -> None:
        self._procs: dict[str, _Managed] = {}
        for spec in specs:
            if spec.name in self._procs:
                raise ConfigError(f"processes: name {spec.name!r} is used twice; rename one")
            self._procs[spec.name] = _Managed(spec)
        self.log_dir = Path(log_dir)
        self._clock = clock
        self._max_log_bytes = max_log_bytes
        self._group_grace_s = group_grace_s
        self._subs: set[ExitSubscription] = set()
        self._callbacks: list[ExitCallback] = []
        self._closed = False

    # --- queries -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Configured process names, in configuration order."""
        return list(self._procs)

    def list(self) -> list[ProcessStatus]:
        """Status of every configured process, in configuration order."""
        return [self._status(m) for m in self._procs.values()]

    def status(self, name: str) -> ProcessStatus:
        return self._status(self._get(name))

    def inspect(self, name: str) -> ProcessDetail:
        """Status plus cwd, env names, log path and, while running, cpu/memory/children."""
        m = self._get(name)
        detail = ProcessDetail(
            **self._status(m).model_dump(),
            cwd=m.spec.cwd,
            env_keys=sorted(m.spec.env),
            log_path=str(self.log_path(name)),
            restart_policy=m.spec.restart,
        )
        if m.running and m.ps is not None:
            _add_usage(detail, m.ps)
        return detail

    def log_path(self, name: str) -> Path:
        """The file that receives the process's stdout and stderr."""
        self._get(name)
        return self.log_dir / f"{name}.log"

    # --- actions -------------------------------------------------------------------------

    async def start_all(self) -> builtins.list[ProcessStatus]:
        """Start every process with autostart; one failing start does not stop the others."""
        for m in self._procs.values():
            if m.spec.autostart:
                try:
                    await self.start(m.spec.name)
                except Unavailable as exc:
                    logger.error("%s", exc)
        return self.list()

    async def start(self, name: str) -> ProcessStatus:
        """Start `name`; a process that is already running is left as it is."""
        m = self._get(name)
        async with m.lock:
            if not m.running:
                await self._spawn(m)
        return self._status(m)

    async def stop(self, name: str, timeout_s: float = 10.0) -> ProcessStatus:
        """SIGTERM the process group, SIGKILL it after `timeout_s`; no-op when not running."""
        m = self._get(name)
        async with m.lock:
            await self._stop_locked(m, timeout_s)
        return self._status(m)

    async def restart(self, name: str, timeout_s: float = 10.0) -> ProcessStatus:
        """Stop (if running) and start again; the status shows the new pid and restarts+1."""
        m = self._get(name)
        async with m.lock:
            await self._stop_locked(m, timeout_s)
            await self._spawn(m)
        return self._status(m)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop everything this supervisor started and end all subscriptions."""
        self._closed = True
        await asyncio.gather(
            *(self.stop(name, timeout_s) for name in self._procs), return_exceptions=True
        )
        for sub in list(self._subs):
            sub.close()

    # --- exits ---------------------------------------------------------------------------

    def subscribe(self, maxsize: int = 1000) -> ExitSubscription:
        """Iterate exits from now on: `async with sup.subscribe() as s: async for e in s:`."""
        sub = ExitSubscription(self, maxsize)
        self._subs.add(sub)
        return sub

    def on_exit(self, callback: ExitCallback) -> Callable[[], None]:
        """Call `callback(exit)` on every exit; returns a function that unregisters it."""
        self._callbacks.append(callback)

        def unregister() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unregister

    # --- internals -----------------------------------------------------------------------

    def _get(self, name: str) -> _Managed:
        try:
            return self._procs[name]
        except KeyError:
            known = ", ".join(self._procs) or "none"
            raise NotFound(f"no managed process {name!r}; configured: {known}") from None

    def _status(self, m: _Managed) -> ProcessStatus:
        return ProcessStatus(
            name=m.spec.name,
            pid=m.proc.pid if m.proc else None,
            running=m.running,
            exit_code=None if m.running else m.exit_code,
            signal=None if m.running else m.signal,
            restarts=max(0, m.starts - 1),
            started_at=m.started_at,
            exited_at=None if m.running else m.exited_at,
            argv=list(m.spec.argv),
            last_error=m.last_error,
        )

    async def _spawn(self, m: _Managed) -> None:
        if self._closed:
            raise Unavailable("the process supervisor is shutting down; nothing can start now")
        spec, path = m.spec, self.log_path(m.spec.name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _rotate(path, self._max_log_bytes)
            with path.open("ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *spec.argv,
                    cwd=spec.cwd,
                    env=_child_env(spec.env),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() kills children too
                )
        except OSError as exc:
            m.last_error = f"{exc.strerror or exc}: {exc.filename or spec.argv[0]}"
            _mark(path, f"start failed: {m.last_error}")
            raise Unavailable(
                f"cannot start process {spec.name!r}: {m.last_error}; fix argv/cwd of "
                f"processes[{spec.name}] in the config"
            ) from exc
        m.proc, m.stopping, m.last_error = proc, False, None
        m.started_at, m.started_mono, m.starts = self._clock(), time.monotonic(), m.starts + 1
        m.exit_code = m.signal = m.exited_at = None
        m.ps = _psutil_process(proc.pid)
        _mark(path, f"started pid {proc.pid}: {' '.join(spec.argv)}")
        m.watch = asyncio.create_task(self._watch(m, proc), name=f"opsmedic-proc-{spec.name}")

    async def _watch(self, m: _Managed, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        m.exited_at = self._clock()
        m.exit_code = rc if rc >= 0 else None
        m.signal = _signal_name(-rc) if rc < 0 else None
        how = f"code {rc}" if rc >= 0 else f"signal {m.signal}"
        _mark(self.log_path(m.spec.name), f"exited pid {proc.pid} with {how}")
        requested = m.stopping
        self._publish(
            ProcessExit(
                name=m.spec.name,
                pid=proc.pid,
                exit_code=m.exit_code,
                signal=m.signal,
                at=m.exited_at,
                requested=requested,
                runtime_s=round(time.monotonic() - m.started_mono, 3),
            )
        )
        if not requested:  # like systemd: what the leader left behind goes with it
            await _end_group(proc.pid, self._group_grace_s)

    def _publish(self, event: ProcessExit) -> None:
        logger.info("process %s exited: %s", event.name, event.model_dump(mode="json"))
        for sub in list(self._subs):
            sub._put(event)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("process exit callback %r failed", callback)

    async def _stop_locked(self, m: _Managed, timeout_s: float) -> None:
        proc, watch = m.proc, m.watch
        # A finished watch already cleaned up the group; its id may belong to others by now.
        if proc is None or watch is None or watch.done():
            return
        m.stopping = True
        _signal_group(proc.pid, signal.SIGTERM)
        done, _ = await asyncio.wait({watch}, timeout=timeout_s)
        if not done:
            logger.warning("process %s ignored SIGTERM for %ss; SIGKILL", m.spec.name, timeout_s)
            _signal_group(proc.pid, signal.SIGKILL)
            await asyncio.wait({watch}, timeout=KILL_WAIT_S)
        await _end_group(proc.pid, min(timeout_s, self._group_grace_s))


# --- helpers -----------------------------------------------------------------------------


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment minus OpsMedic's own settings (they may hold secrets), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OPSMEDIC_")}
    env.setdefault("PYTHONUNBUFFERED", "1")  # so a crash's last lines reach the log
    env.update(extra)
    return env


def _rotate(path: Path, max_bytes: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > max_bytes:
            path.replace(path.with_name(path.name + ".1"))


def _mark(path: Path, text: str) -> None:
    """Append one `[opsmedic]` line; a failure to log must not break supervision."""
    try:
        with path.open("a", encoding="utf-8") as log:
            log.write(f"[opsmedic] {utcnow().isoformat(timespec='seconds')} {text}\n")
    except OSError as exc:
        logger.warning("cannot write %s: %s", path, exc)


def _psutil_process(pid: int) -> psutil.Process | None:
    try:
        ps = psutil.Process(pid)
        ps.cpu_percent(None)  # baseline for the first inspect()
        return ps
    except psutil.Error:
        return None


def _add_usage(detail: ProcessDetail, ps: psutil.Process) -> None:
    try:
        with ps.oneshot():
            detail.pgid = os.getpgid(ps.pid)
            detail.cpu_percent = round(ps.cpu_percent(None), 1)
            detail.rss_bytes = ps.memory_info().rss
            detail.memory_percent = round(ps.memory_percent(), 2)
            detail.children = len(ps.children(recursive=True))
    except (psutil.Error, OSError):
        pass  # it exited between the check and the read; the status already says so


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the group; False when the group has no members left."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("no permission to signal process group %s", pgid)
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also counts zombies that nobody reaps (a PID 1 that does not reap): look closer.
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


async def _end_group(pgid: int, grace_s: float) -> None:
    """SIGTERM what is left of a process group, SIGKILL it after `grace_s`."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if not _group_alive(pgid):
            return
    logger.warning("process group %s outlived SIGTERM by %ss; SIGKILL", pgid, grace_s)
    _signal_group(pgid, signal.SIGKILL)
