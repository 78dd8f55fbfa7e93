"""MCP resources: read-only JSON views of OpsMedic's store (register(server))."""

from resources.registry import register

__all__ = ["register"]
