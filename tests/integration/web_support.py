"""Serve a real OpsMedic HTTP app with uvicorn on 127.0.0.1 inside the test's event loop.

Used by the dashboard and /metrics tests: the server's lifespan (store, watchers, detector)
runs exactly as under `opsmedic serve --http`, and the test can still reach `deps`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from mcp_server.app import create_http_app, create_server
from mcp_server.deps import Deps
from mcp_server.settings import Settings


@contextlib.asynccontextmanager
async def serve_app(app: Any, timeout: float = 30.0) -> AsyncIterator[str]:
    """Run `app` on a free loopback port until the block ends; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_config=None, lifespan="on", timeout_graceful_shutdown=2, ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(timeout):
            while not server.started:
                if task.done():
                    task.result()  # raises why it could not start
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(10):
                await task
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        sock.close()


@contextlib.asynccontextmanager
async def opsmedic_http(
    settings: Settings, *, docker: bool = True
) -> AsyncIterator[tuple[str, Deps]]:
    """A full OpsMedic server (tools, watchers, dashboard) over real HTTP: (base URL, deps)."""
    deps = Deps.build(settings)
    await deps.start()  # keeps the store open after the server stops, for inspection
    try:
        server = create_server(settings, deps, docker=docker)
        async with serve_app(create_http_app(server, settings)) as base:
            yield base, deps
    finally:
        await deps.stop()
