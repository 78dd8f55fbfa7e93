"""HTTP and TCP probes: is a service answering, correctly and fast enough?

`run_probe(spec)` performs one check and never raises for a failing target: the result says
`ok`/`warn`/`fail` with a short reason (connection refused, timed out, DNS lookup failed,
got HTTP 500 expected 200, body lacks 'text'). Every HTTP probe uses a fresh connection, so
a server that stopped accepting connections is seen even when old ones still work.
`ProbeScheduler` runs every probe on its own interval and keeps the last result of each.
"""

from __future__ import annotations

import inspect
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal

import anyio
import httpx
from pydantic import BaseModel, ConfigDict, Field

from mcp_server.core import duties
from mcp_server.errors import ConfigError, NotFound
from mcp_server.models import utcnow
from mcp_server.settings import ProbeSpec

logger = logging.getLogger(__name__)

ProbeStatus = Literal["ok", "warn", "fail"]
OnResult = Callable[["ProbeResult"], Awaitable[None] | None]
MAX_BODY_BYTES = 1024 * 1024  # body_contains looks at the first MiB only
USER_AGENT = "opsmedic-probe"


PROBE_FAILED = "last check failed"  # the probe duty's detail (read by the health score)


class ProbeResult(BaseModel):
    """One check of probe:NAME. `ok` is False only when `status` is `fail`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["http", "tcp"]
    target: str  # the URL, or host:port
    ok: bool
    status: ProbeStatus
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None  # why it failed, short enough to quote
    detail: str | None = None  # why it is only `warn`, or other context
    checked_at: datetime = Field(default_factory=utcnow)


def probe_problem(spec: ProbeSpec) -> str | None:
    """What is missing for `spec` to be runnable, or None when it is complete."""
    if spec.kind == "http" and not spec.url:
        return f"probe {spec.name!r} is http but has no url; set probes[{spec.name}].url"
    if spec.kind == "tcp" and (not spec.host or not spec.port):
        return f"probe {spec.name!r} is tcp and needs host and port; set both in the config"
    return None


def describe_error(exc: BaseException, timeout_s: float) -> str:
    """A short, readable reason for a failed connection or request."""
    chain = _chain(exc)
    if any(isinstance(e, TimeoutError | httpx.TimeoutException) for e in chain):
        return f"timed out after {timeout_s:g}s"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused (nothing listening on that port?)"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "DNS lookup failed: the host name does not resolve"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return f"TLS error: {_short(str(exc))}"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"invalid URL: {_short(str(exc))}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"bad HTTP from server: {_short(str(exc))}"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "connection reset by the server"
    root = chain[-1] if isinstance(exc, BaseExceptionGroup) else exc
    return _short(f"{type(root).__name__}: {root}" if str(root) else type(root).__name__)


async def run_probe(
    spec: ProbeSpec,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ProbeResult:
    """Run one check of `spec`; failures are reported in the result, never raised."""
    target = spec.url or f"{spec.host}:{spec.port}"
    problem = probe_problem(spec)
    if problem:
        return _result(spec, target, clock, error=problem)
    started = time.perf_counter()
    try:
        with anyio.fail_after(spec.timeout_s):
            if spec.kind == "tcp":
                return await _tcp(spec, target, clock, started)
            return await _http(spec, target, clock, started, transport)
    except Exception as exc:  # whatever stops the check is the finding, not a crash
        logger.debug("probe %s failed", spec.name, exc_info=True)
        latency = _ms_since(started)
        return _result(spec, target, clock, latency, error=describe_error(exc, spec.timeout_s))


async def _tcp(
    spec: ProbeSpec, target: str, clock: Callable[[], datetime], started: float
) -> ProbeResult:
    assert spec.host is not None and spec.port is not None
    stream = await anyio.connect_tcp(spec.host, spec.port)
    await stream.aclose()
    return _graded(spec, target, clock, _ms_since(started), status_code=None)


async def _http(
    spec: ProbeSpec,
    target: str,
    clock: Callable[[], datetime],
    started: float,
    transport: httpx.AsyncBaseTransport | None,
) -> ProbeResult:
    assert spec.url is not None
    async with (
        httpx.AsyncClient(
            transport=transport,
            timeout=spec.timeout_s,
            headers={"user-agent": USER_AGENT},
            follow_redirects=False,  # a redirect is an answer; expect_status can name it
            trust_env=False,  # like Kubernetes probes: straight to the target, no proxy env
        ) as client,
        client.stream(spec.method.upper(), spec.url) as response,
    ):
        body = await _read_head(response) if spec.body_contains else b""
    latency = _ms_since(started)
    code = response.status_code
    if code != spec.expect_status:
        error = f"got HTTP {code}, expected {spec.expect_status}"
        return _result(spec, target, clock, latency, status_code=code, error=error)
    if spec.body_contains and spec.body_contains.encode() not in body:
        error = f"response body does not contain {_short(spec.body_contains, 60)!r}"
        return _result(spec, target, clock, latency, status_code=code, error=error)
    return _graded(spec, target, clock, latency, status_code=code)


async def _read_head(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


def _graded(
    spec: ProbeSpec,
    target: str,
    clock: Callable[[], datetime],
    latency: float,
    status_code: int | None,
) -> ProbeResult:
    """A passing check: `warn` when slower than latency_warn_ms, else `ok`."""
    slow = spec.latency_warn_ms is not None and latency > spec.latency_warn_ms
    return ProbeResult(
        name=spec.name,
        kind=spec.kind,
        target=target,
        ok=True,
        status="warn" if slow else "ok",
        status_code=status_code,
        latency_ms=latency,
        detail=f"slow: {latency:.0f} ms > {spec.latency_warn_ms:g} ms" if slow else None,
        checked_at=clock(),
    )


def _result(
    spec: ProbeSpec,
    target: str,
    clock: Callable[[], datetime],
    latency: float | None = None,
    *,
    error: str,
    status_code: int | None = None,
) -> ProbeResult:
    return ProbeResult(
        name=spec.name,
        kind=spec.kind,
        target=target,
        ok=False,
        status="fail",
        status_code=status_code,
        latency_ms=latency,
        error=error,
        checked_at=clock(),
    )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc`, its causes and (for exception groups) their members, at most 20."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        nxt = current.__cause__ or current.__context__
        if nxt is not None:
            todo.append(nxt)
    return seen


def _short(text: str, width: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "~"


# --- scheduling --------------------------------------------------------------------------


class ProbeScheduler:
    """Runs every probe on its interval in one task group; keeps the last result of each.

    `on_result(result)` (plain or async function) is called after every check; the detection
    layer turns failures into incidents there. Use `await scheduler.run()` in a task and
    cancel it to stop.
    """

    def __init__(
        self,
        specs: Sequence[ProbeSpec],
        on_result: OnResult | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._specs: dict[str, ProbeSpec] = {}
        for spec in specs:
            problem = probe_problem(spec)
            if problem:
                raise ConfigError(problem)
            if spec.name in self._specs:
                raise ConfigError(f"probes: name {spec.name!r} is used twice; rename one")
            self._specs[spec.name] = spec
        self._on_result = on_result
        self._transport = transport
        self._clock = clock
        self._results: dict[str, ProbeResult] = {}

    def names(self) -> list[str]:
        return list(self._specs)

    def results(self) -> list[ProbeResult]:
        """The last result of every probe that has run, in configuration order."""
        return [self._results[n] for n in self._specs if n in self._results]

    def result(self, name: str) -> ProbeResult | None:
        """The last result of probe `name`, or None before its first check."""
        self._spec(name)
        return self._results.get(name)

    async def run_now(self, name: str) -> ProbeResult:
        """Check probe `name` immediately (besides its schedule) and return the result."""
        return await self._check(self._spec(name))

    async def run(self) -> None:
        """Check every probe now and then every `interval_s`, until cancelled. Inside a duty
        each probe is a duty of its own, `probe:NAME`, beating with each result."""
        async with anyio.create_task_group() as tg:
            for spec in self._specs.values():
                duties.register(f"probe:{spec.name}", spec.interval_s + spec.timeout_s)
                tg.start_soon(self._loop, spec, name=f"probe:{spec.name}")

    async def _loop(self, spec: ProbeSpec) -> None:
        while True:
            started = anyio.current_time()
            try:
                await self._check(spec)
            except Exception:  # one probe's failing callback must not stop the others
                logger.exception("probe %s: result handling failed", spec.name)
            await anyio.sleep(max(0.0, spec.interval_s - (anyio.current_time() - started)))

    async def _check(self, spec: ProbeSpec) -> ProbeResult:
        result = await run_probe(spec, transport=self._transport, clock=self._clock)
        self._results[spec.name] = result
        duties.beat(f"probe:{spec.name}", "last check ok" if result.ok else PROBE_FAILED)
        if self._on_result is not None:
            outcome = self._on_result(result)
            if inspect.isawaitable(outcome):
                await outcome
        return result

    def _spec(self, name: str) -> ProbeSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(self._specs) or "none"
            raise NotFound(f"no probe {name!r}; configured: {known}") from None
