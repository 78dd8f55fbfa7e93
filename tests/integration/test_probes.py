"""Probes against a real HTTP server and real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import httpx
import pytest

from mcp_server.backends.probes import (
    ProbeResult,
    ProbeScheduler,
    describe_error,
    probe_problem,
    run_probe,
)
from mcp_server.errors import ConfigError, NotFound
from mcp_server.settings import ProbeSpec

ROUTES: dict[str, tuple[int, bytes, float]] = {
    "/ok": (200, b"status: healthy", 0.0),
    "/fail": (500, b"boom", 0.0),
    "/slow": (200, b"status: healthy", 0.3),
    "/hang": (200, b"", 30.0),
    "/moved": (302, b"", 0.0),
}


class HttpServer:
    """A minimal HTTP/1.1 server on asyncio.start_server; one response per connection."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> HttpServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            self.hits.append(path)
            if path == "/garbage":
                writer.write(b"this is not http\r\n\r\n")
            else:
                code, body, delay = ROUTES.get(path, (404, b"no route", 0.0))
                await asyncio.sleep(delay)
                writer.write(
                    f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\n"
                    f"Location: /ok\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    async with HttpServer() as server:
        yield server


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang until they time out."""
    with socket.socket() as srv, socket.socket() as first:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        first.connect(srv.getsockname())  # takes the only slot; never accepted
        yield int(srv.getsockname()[1])


def http_spec(url: str, **kw: object) -> ProbeSpec:
    return ProbeSpec.model_validate({"name": "api", "kind": "http", "url": url, **kw})


def tcp_spec(port: int, **kw: object) -> ProbeSpec:
    fields = {"name": "db", "kind": "tcp", "host": "127.0.0.1", "port": port, **kw}
    return ProbeSpec.model_validate(fields)


async def test_http_ok_with_body_text(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/ok"), body_contains="healthy"))
    assert (r.ok, r.status, r.status_code, r.error) == (True, "ok", 200, None)
    assert r.latency_ms is not None and r.latency_ms >= 0 and r.target == http.url("/ok")


async def test_http_wrong_status(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/fail")))
    assert not r.ok and r.status == "fail" and r.status_code == 500
    assert r.error == "got HTTP 500, expected 200"


async def test_http_redirect_is_an_answer_not_followed(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/moved"), expect_status=302))
    assert r.ok and r.status_code == 302 and http.hits == ["/moved"]


async def test_http_missing_text(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/ok"), body_contains="database: up"))
    assert not r.ok and r.status_code == 200
    assert r.error == "response body does not contain 'database: up'"


async def test_http_slow_answer_is_a_warning(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/slow"), latency_warn_ms=100))
    assert r.ok and r.status == "warn" and r.detail and r.detail.startswith("slow:")
    assert r.latency_ms is not None and r.latency_ms > 100


async def test_http_timeout(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/hang"), timeout_s=0.3))
    assert not r.ok and r.error == "timed out after 0.3s"


async def test_http_connection_refused(closed_port: int) -> None:
    r = await run_probe(http_spec(f"http://127.0.0.1:{closed_port}/"))
    assert not r.ok and r.error and r.error.startswith("connection refused")


async def test_http_garbage_answer(http: HttpServer) -> None:
    r = await run_probe(http_spec(http.url("/garbage")))
    assert not r.ok and r.error and r.error.startswith("bad HTTP from server")


async def test_http_invalid_url() -> None:
    r = await run_probe(http_spec("ftp://127.0.0.1/x"))
    assert not r.ok and r.error and r.error.startswith("invalid URL")


async def test_tcp_listening_closed_and_full(
    http: HttpServer, closed_port: int, full_backlog: int
) -> None:
    up = await run_probe(tcp_spec(http.port))
    assert up.ok and up.status == "ok" and up.target == f"127.0.0.1:{http.port}"
    down = await run_probe(tcp_spec(closed_port))
    assert not down.ok and down.error and down.error.startswith("connection refused")
    stuck = await run_probe(tcp_spec(full_backlog, timeout_s=0.3))
    assert not stuck.ok and stuck.error == "timed out after 0.3s"


async def test_incomplete_specs_fail_without_raising() -> None:
    spec = ProbeSpec(name="nourl", kind="http")
    assert probe_problem(spec)
    r = await run_probe(spec)
    assert not r.ok and r.error and "has no url" in r.error
    with pytest.raises(ConfigError, match="needs host and port"):
        ProbeScheduler([ProbeSpec(name="t", kind="tcp", host="127.0.0.1")])


def test_describe_dns_and_reset_errors() -> None:
    def raised(make: Callable[[], BaseException], cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except OSError as inner:
                raise make() from inner
        except BaseException as outer:
            return outer

    dns = raised(lambda: httpx.ConnectError("lookup"), socket.gaierror(-2, "Name not known"))
    assert describe_error(dns, 1).startswith("DNS lookup failed")
    reset = raised(lambda: httpx.ReadError("read"), ConnectionResetError(104, "reset"))
    assert describe_error(reset, 1) == "connection reset by the server"


async def until(pred: Callable[[], object], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s}s")
        await asyncio.sleep(0.02)


async def test_scheduler_runs_each_probe_on_its_interval(
    http: HttpServer, closed_port: int
) -> None:
    seen: list[ProbeResult] = []

    async def on_result(result: ProbeResult) -> None:
        seen.append(result)
        if len(seen) == 1:
            raise RuntimeError("a broken callback must not stop the schedule")

    specs = [
        http_spec(http.url("/ok"), interval_s=0.05),
        tcp_spec(closed_port, interval_s=0.05),
    ]
    scheduler = ProbeScheduler(specs, on_result)
    assert scheduler.results() == [] and scheduler.result("api") is None
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        await until(lambda: sum(r.name == "api" for r in seen) >= 3)
        await until(lambda: sum(r.name == "db" for r in seen) >= 3)
        tg.cancel_scope.cancel()
    last = {r.name: r for r in scheduler.results()}
    assert last["api"].ok and not last["db"].ok
    assert [r.name for r in scheduler.results()] == ["api", "db"]


async def test_run_now_and_unknown_names(http: HttpServer) -> None:
    calls: list[str] = []
    scheduler = ProbeScheduler([http_spec(http.url("/ok"))], lambda r: calls.append(r.name))
    result = await scheduler.run_now("api")
    assert result.ok and scheduler.result("api") == result and calls == ["api"]
    with pytest.raises(NotFound, match="configured: api"):
        await scheduler.run_now("nope")
    with pytest.raises(ConfigError, match="used twice"):
        ProbeScheduler([http_spec("http://127.0.0.1/"), http_spec("http://127.0.0.1/")])


async def test_unexpected_errors_become_failed_results() -> None:
    r = await run_probe(tcp_spec(99999))  # out of range: raised inside anyio's task group
    assert not r.ok and r.error and "port must be 0-65535" in r.error
