"""Web layer beside /mcp: dashboard page, JSON API under /api/, live SSE stream, /metrics."""

from mcp_server.web.routes import register_web

__all__ = ["register_web"]
