"""OpsMedic: a self-healing operations MCP server."""

__version__ = "0.1.0"
