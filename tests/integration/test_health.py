"""Truthful health against real failures: a full disk under the SQLite store, a stopped
Dovecot, a stopped MongoDB-wire server, a lost hub. Each must show within one duty interval
and clear by itself once the service is back; deadlines are generous, no fixed sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.asyncio.server import ServerConnection, serve

from mcp_server.backends.ingest.build import HubClient
from mcp_server.core.duties import Duties, supervise
from mcp_server.core.health import STORE_PROBE_S, health
from mcp_server.deps import Deps
from mcp_server.services import build_services
from mcp_server.settings import ProbeSpec, Settings
from mcp_server.store.base import open_store
from mcp_server.wiring import serving
from tests.helpers import OPSMEDIC, REPO, clean_env, free_port, http_server, wait_until
from tests.services import Dovecot, MongoWire, Service, _terminate_all

FAST = {"thresholds": {"interval_s": 1.0}, "ingest": {"stall_check_s": 1.0}}


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A real filesystem of `size` bytes at `path` (tmpfs; tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem is full; return it (delete it to free the space)."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 16384)
            f.flush()
    return filler


def status_cli(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPSMEDIC, "status"], env=clean_env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_healthz_is_503_while_the_store_disk_is_full_and_200_after(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        store = {"OPSMEDIC_STORE_URL": f"sqlite:///{disk}/opsmedic.db"}
        with http_server(tmp_path, **store) as (base, _proc):
            wait_until(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 200, 30)
            filler = fill(disk)
            try:
                # /healthz writes on demand (cached 1 s): one probe interval is plenty
                full = wait_until(lambda: _healthz(base, 503), STORE_PROBE_S + 5)
                assert full["store"] is False and full["ok"] is False
                assert "full" in full["store_error"] or "disk" in full["store_error"]
                cli = status_cli(OPSMEDIC_DATA_DIR=str(tmp_path), **store)
                assert cli.returncode == 3 and "NOT WRITABLE" in cli.stdout
            finally:
                filler.unlink()
            back = wait_until(lambda: _healthz(base, 200), STORE_PROBE_S + 5)
            assert back["store"] is True and back["duties"]
            cli = status_cli(OPSMEDIC_DATA_DIR=str(tmp_path), **store)
            assert cli.returncode == 0, cli.stdout + cli.stderr
            assert "1 instance(s), 0 unhealthy" in cli.stdout and "store " in cli.stdout


def _healthz(base: str, want: int) -> dict[str, Any] | None:
    r = httpx.get(base + "/healthz", timeout=10)
    return r.json() if r.status_code == want else None  # type: ignore[no-any-return]


# --- in-process servers on real services -----------------------------------------------------


@contextlib.asynccontextmanager
async def running(settings: Settings, store_url: str | None = None) -> AsyncIterator[Deps]:
    deps = Deps.build(settings, open_store(store_url) if store_url else None)
    build_services(deps, docker=False)
    async with serving(deps):
        yield deps


async def until(check: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"not within {timeout} s"
        await asyncio.sleep(0.1)
    return value


def stop_daemon(svc: Service, port: int) -> None:
    """SIGTERM (then SIGKILL) the service by pid, keeping its directory and port, and every
    process still serving a connection on its port: a Dovecot `imap` process outlives its
    master by seconds and keeps answering the session it holds."""
    assert svc.proc is not None
    svc._stop_main(svc.proc)
    svc.proc = None
    held = {c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port}
    _terminate_all([psutil.Process(pid) for pid in held if pid and pid != os.getpid()], 5)


def start_again(svc: Service) -> None:
    """Start a stopped service on its old directory and port (its files are kept)."""
    with svc.log_path.open("ab") as log:
        svc.proc = subprocess.Popen(svc.command(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
    svc._wait_ready()


def _duty(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in body["duties"] if d["name"] == name)


@pytest.fixture
def own_dovecot() -> Iterator[Dovecot]:
    """A Dovecot of this test's own: it is stopped and started again."""
    dovecot = Dovecot()
    dovecot.start()
    try:
        yield dovecot
    finally:
        dovecot.stop()


async def test_a_stopped_imap_server_shows_within_one_interval_and_recovers(tmp_path, own_dovecot):
    imap = {"host": "127.0.0.1", "port": own_dovecot.port, "username": "ops@example.test",
            "password": "secret", "poll_s": 2.0}  # fmt: skip
    probe = ProbeSpec(name="imap-port", kind="tcp", host="127.0.0.1", port=own_dovecot.port,
                      interval_s=1.0)  # fmt: skip
    settings = Settings(data_dir=tmp_path, imap=imap, probes=[probe], **FAST)  # type: ignore[arg-type]
    interval = settings.imap.poll_s + 10.0  # core.health.intervals: poll_s + 10

    async with running(settings) as deps:

        async def imap_is(state: str) -> dict[str, Any] | None:
            body = await health(deps)
            return body if _duty(body, "imap-replies")["state"] == state else None

        async def probed() -> bool:
            return _duty(await health(deps), "probe:imap-port")["state"] == "running"

        await until(lambda: imap_is("running"), 30)
        await until(probed, 30)  # every probe is listed with its last result
        await asyncio.to_thread(stop_daemon, own_dovecot, own_dovecot.port)
        down = await until(lambda: imap_is("waiting"), interval)
        assert f"IMAP 127.0.0.1:{own_dovecot.port} unreachable" in deps.tasks["imap-replies"]
        assert "imap-replies" in down["waiting"]
        assert _duty(down, "probe:imap-port")["detail"] == "last check failed"
        await asyncio.to_thread(start_again, own_dovecot)
        again = await until(lambda: imap_is("running"), 60)  # the watcher's backoff is 30 s
        assert again["ok"] is True, again["unhealthy"]


@pytest.fixture
def own_mongo() -> Iterator[MongoWire]:
    mongo = MongoWire()
    mongo.start()
    try:
        yield mongo
    finally:
        mongo.stop()


async def test_an_unreachable_mongodb_makes_health_fail_then_recover(tmp_path, own_mongo):
    settings = Settings(data_dir=tmp_path, **FAST)  # type: ignore[arg-type]
    async with running(settings, f"{own_mongo.url}/health_{os.getpid()}") as deps:

        async def ok_is(want: bool) -> dict[str, Any] | None:
            body = await health(deps)
            return body if body["ok"] is want else None

        await until(lambda: ok_is(True), 30)
        beats = await deps.store.list_heartbeats(deps.duties.clock() - dt.timedelta(seconds=60))
        assert [b.holder for b in beats] == [deps.holder]
        await asyncio.to_thread(stop_daemon, own_mongo, own_mongo.port)
        down = await until(lambda: ok_is(False), STORE_PROBE_S + 10)
        assert down["store"] is False and down["tasks"]["store"].startswith("waiting")
        await asyncio.to_thread(start_again, own_mongo)
        back = await until(lambda: ok_is(True), 90)  # duties that failed retry with backoff
        assert back["store"] is True and back["tasks"]["store"] == "running"


async def test_the_hub_client_duty_shows_a_lost_hub_and_recovers():
    async def quiet(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def noop(_batch: Any) -> None:
        return None

    port = free_port()
    client = HubClient(f"ws://127.0.0.1:{port}/events", noop, backoff=(0.05, 0.5))
    reg = Duties()

    async def hub_is(state: str) -> bool:
        return reg.get("hub-client", "").startswith(state)

    task = asyncio.create_task(supervise(reg, "hub-client", client.run, interval_s=5.0))
    try:
        async with serve(quiet, "127.0.0.1", port):
            await until(lambda: hub_is("running"), 30)
        await until(lambda: hub_is("waiting: hub hub:ws://127.0.0.1"), 10)
        async with serve(quiet, "127.0.0.1", port):
            await until(lambda: hub_is("running"), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
