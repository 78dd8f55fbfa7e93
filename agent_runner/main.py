"""`opsmedic run`: the server (MCP over HTTP + watchers) and the runner in one process, or the
runner alone against remote servers (--url, repeatable: one event loop per server, each
server auditing what this runner does there) or a server it starts over stdio (--stdio)."""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastmcp import Client
from fastmcp.client.transports import StdioTransport, StreamableHttpTransport
from mcp_types import Implementation

from agent_runner.advisor import Advisor, advisor_from_settings
from agent_runner.remotes import Remote
from agent_runner.runner import PassReport, Runner
from mcp_server import __version__
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)

CLIENT_INFO = Implementation(name="opsmedic-runner", version=__version__)


@dataclass
class RunOptions:
    mode: Literal["check", "heal"] = "check"
    once: bool = False
    remotes: list[Remote] = field(default_factory=list)  # --url/--token pairs
    stdio: str | None = None
    http: bool = True
    tick_s: float = 5.0
    settle_s: float = 2.0  # --once: let the watchers observe before the pass


RECONNECT_S = (1.0, 30.0)  # a remote server away: retry from 1 s, doubling up to 30 s


@contextlib.asynccontextmanager
async def connect(
    settings: Settings,
    opts: RunOptions,
    remote: Remote | None = None,
    advisor: Advisor | None = None,
) -> AsyncIterator[Client[Any]]:
    """A client of the server to drive: `remote`, stdio, or in-process (plus HTTP). In process,
    the advisor's model health shows in the server's /healthz as the `llm` duty."""
    if remote is not None:
        transport = StreamableHttpTransport(remote.url, auth=remote.token)
        async with Client(transport, client_info=CLIENT_INFO) as client:
            yield client
        return
    if opts.stdio:
        argv = shlex.split(opts.stdio)
        async with Client(StdioTransport(argv[0], argv[1:]), client_info=CLIENT_INFO) as client:
            yield client
        return
    async with local_server(settings, opts, advisor) as client:
        yield client


@contextlib.asynccontextmanager
async def local_server(
    settings: Settings, opts: RunOptions, advisor: Advisor | None = None
) -> AsyncIterator[Client[Any]]:
    from mcp_server.app import create_server
    from mcp_server.auth import check_bind
    from mcp_server.deps import Deps
    from mcp_server.server_runner import uvicorn_server

    # The runner decides and acts (after its RCA); the server's own auto-restart stays off.
    settings = settings.model_copy(
        update={
            "mode": opts.mode,
            "policy": settings.policy.model_copy(update={"auto_restart": False}),
        }
    )
    deps = Deps.build(settings)
    bind = getattr(advisor, "bind_duties", None)
    if bind is not None:
        bind(deps.duties)
    server = create_server(settings, deps)
    async with anyio.create_task_group() as tg:
        http = None
        if opts.http:
            check_bind(settings.http.host, settings.auth)
            http = uvicorn_server(server, settings)
            tg.start_soon(http.serve)
            logger.info(
                "MCP over HTTP at http://%s:%s%s and dashboard at /",
                settings.http.host,
                settings.http.port,
                settings.http.path,
            )
        try:
            async with Client(server, client_info=CLIENT_INFO) as client:
                yield client
        finally:
            if http is not None:
                http.should_exit = True


async def run(settings: Settings, opts: RunOptions) -> int:
    if len(opts.remotes) > 1:
        return await run_many(settings, opts)
    advisor: Advisor = advisor_from_settings(settings)
    remote = opts.remotes[0] if opts.remotes else None
    async with connect(settings, opts, remote, advisor) as client:
        runner = _runner(client, advisor, settings, opts)
        logger.info("runner started: mode %s, RCA by %s", opts.mode, advisor.name)
        if opts.once:
            await anyio.sleep(opts.settle_s)
            report = await runner.once()
            print_report(report)
            return 0 if report.healthy else 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_signal, [runner], tg.cancel_scope)
            await runner.run_forever(opts.tick_s)
            tg.cancel_scope.cancel()
    return 0


def _runner(client: Client[Any], advisor: Advisor, settings: Settings, opts: RunOptions) -> Runner:
    monitors = {m.name: m.interval_s for m in settings.monitors}
    return Runner(client, advisor, mode=opts.mode, monitors=monitors)


async def run_many(settings: Settings, opts: RunOptions) -> int:
    """One runner per server, each with its own event loop task; a server that is away is
    retried without holding up the others. --once: a report per server, exit 1 if any is
    unhealthy or unreachable."""
    advisor: Advisor = advisor_from_settings(settings)
    names = ", ".join(r.name for r in opts.remotes)
    logger.info("runner started for %d servers (%s): mode %s, RCA by %s",
                len(opts.remotes), names, opts.mode, advisor.name)  # fmt: skip
    healthy: dict[str, bool] = {}
    runners: list[Runner] = []
    async with anyio.create_task_group() as tg:
        if not opts.once:
            tg.start_soon(_stop_on_signal, runners, tg.cancel_scope)
        for remote in opts.remotes:
            tg.start_soon(_serve_one, settings, opts, remote, advisor, runners, healthy)
    if opts.once and not all(healthy.get(r.name) for r in opts.remotes):
        return 1
    return 0


async def _serve_one(
    settings: Settings,
    opts: RunOptions,
    remote: Remote,
    advisor: Advisor,
    runners: list[Runner],
    healthy: dict[str, bool],
) -> None:
    """The loop for one server: connect, follow its events; reconnect when it goes away."""
    delay = RECONNECT_S[0]
    while True:
        try:
            async with connect(settings, opts, remote) as client:
                runner = _runner(client, advisor, settings, opts)
                runners.append(runner)
                logger.info("server %s: runner connected", remote.name)
                if opts.once:
                    await anyio.sleep(opts.settle_s)
                    report = await runner.once()
                    print(f"== {remote.url}")
                    print_report(report)
                    healthy[remote.name] = report.healthy
                    return
                delay = RECONNECT_S[0]
                await runner.run_forever(opts.tick_s)
                return  # stopped by a signal
        except Exception as exc:  # one server away must not stop the others
            if opts.once:
                print(f"== {remote.url}\nunreachable: {exc}")
                healthy[remote.name] = False
                return
            logger.warning("server %s: %s; reconnecting in %.0fs", remote.name, exc, delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, RECONNECT_S[1])


async def _stop_on_signal(runners: list[Runner], scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("signal %s: finishing the step in hand, then stopping", signum)
            for runner in runners:
                runner.stop()
            scope.cancel()  # actions in hand are shielded; they finish or are recorded
            return


def print_report(report: PassReport) -> None:
    print(f"handled {len(report.handled)} incident(s)")
    for name, verdict in report.monitors.items():
        print(f"monitor {name}: {verdict}")
    if report.unhealthy:
        print("still unhealthy:")
        for line in report.unhealthy:
            print(f"  {line}")
    else:
        print("all healthy")
