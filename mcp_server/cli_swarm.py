"""`opsmedic services [--nodes]`: the swarm's services (or nodes), one line each."""

from __future__ import annotations

import sys

from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.backends.swarm.format import node_line, service_line
from mcp_server.errors import ConfigError, OpsMedicError
from mcp_server.settings import Settings


async def cmd_services(settings: Settings, nodes: bool) -> int:
    """Exit 0 with the listing; 1 when the manager cannot be read (the reason on stderr)."""
    from mcp_server.wiring import build_swarm

    swarm = build_swarm(settings, DockerEngine() if settings.swarm.enabled else None)
    if swarm is None:
        raise ConfigError(
            "no swarm is configured: set OPSMEDIC_SWARM__DOCKER_HOST to a manager, or "
            "OPSMEDIC_SWARM__ENABLED=true when DOCKER_HOST is one"
        )
    try:
        snap = await swarm.snapshot()
    except OpsMedicError as exc:
        print(f"opsmedic: {exc}", file=sys.stderr)
        return 1
    rows = [node_line(n) for n in snap.nodes] if nodes else [service_line(s) for s in snap.services]
    print("\n".join(rows) if rows else f"no {'nodes' if nodes else 'services'}")
    return 0
