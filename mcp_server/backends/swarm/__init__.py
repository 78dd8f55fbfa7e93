"""Docker Swarm: services, tasks and nodes of one manager (see engine.SwarmBackend)."""

from mcp_server.backends.swarm.engine import SwarmBackend, SwarmSnapshot
from mcp_server.backends.swarm.format import NodeRow, ServiceRow, TaskRow

__all__ = ["NodeRow", "ServiceRow", "SwarmBackend", "SwarmSnapshot", "TaskRow"]
