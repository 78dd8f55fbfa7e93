"""Run a built server on stdio or HTTP (uvicorn), with logs kept off stdout."""

from __future__ import annotations

import logging
import socket

import uvicorn
from fastmcp import FastMCP

from mcp_server.app import create_http_app
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)


async def serve_stdio(server: FastMCP, settings: Settings) -> None:
    logger.info("serving MCP over stdio (store %s)", _safe_url(settings.resolved_store_url))
    await server.run_stdio_async(show_banner=False, log_level=settings.log_level.upper())


def uvicorn_server(
    server: FastMCP, settings: Settings, sock: socket.socket | None = None
) -> uvicorn.Server:
    app = create_http_app(server, settings)
    config = uvicorn.Config(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


async def serve_http(server: FastMCP, settings: Settings) -> None:
    http = uvicorn_server(server, settings)
    logger.info(
        "serving MCP over HTTP at http://%s:%s%s",
        settings.http.host,
        settings.http.port,
        settings.http.path,
    )
    await http.serve()


def _safe_url(url: str) -> str:
    """Hide credentials in a store URL before logging it."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
