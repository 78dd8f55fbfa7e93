"""The server's services, built once by one function, typed: no lookups by string key.

`build_services(deps, docker=..., overrides=Overrides(...))` builds every part this
configuration needs; tests pass their own parts as typed overrides. The result is frozen and
bound to `deps.services`, where tools, resources, prompts, routes and watchers find it.
Parts that need each other at run time (the approval flow and the action pipeline) reach the
others through `deps.services` when they act, so there is no construction cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_server.backends.diskclean import DiskPlanner
    from mcp_server.backends.docker.engine import DockerEngine
    from mcp_server.backends.host import HostMetrics
    from mcp_server.backends.mail.outbox import Outbox
    from mcp_server.backends.probes import ProbeScheduler
    from mcp_server.backends.processes import ProcessSupervisor
    from mcp_server.backends.swarm import SwarmBackend
    from mcp_server.backends.webhooks.outbox import WebhookOutbox
    from mcp_server.core.actions import Actions
    from mcp_server.core.approval_flow import ApprovalFlow
    from mcp_server.core.autoheal import AutoHealer
    from mcp_server.core.detection import Detector
    from mcp_server.core.fleet import FleetSource, FleetWatch
    from mcp_server.core.health import StoreProbe
    from mcp_server.core.holds import Holds
    from mcp_server.core.incidents import Incidents
    from mcp_server.core.jobs import JobTracker
    from mcp_server.core.monitors import Monitors
    from mcp_server.core.reconcile import Reconciler
    from mcp_server.core.swarm import SwarmWatcher
    from mcp_server.deps import Deps
    from mcp_server.drivers import Drivers
    from mcp_server.safety.policy import Policy


@dataclass(frozen=True)
class Services:
    policy: Policy
    incidents: Incidents
    holds: Holds
    planner: DiskPlanner
    monitors: Monitors
    outbox: Outbox
    jobs: JobTracker
    drivers: Drivers
    actions: Actions
    autoheal: AutoHealer
    detector: Detector
    reconciler: Reconciler
    host: HostMetrics
    store_probe: StoreProbe
    fleet: FleetWatch
    approvals: ApprovalFlow | None = None
    docker: DockerEngine | None = None
    processes: ProcessSupervisor | None = None
    probes: ProbeScheduler | None = None
    hub: Any | None = None  # backends.ingest_client.HubClient (client mode)
    restarter: Any | None = None  # restarts jobs through the hub or a webhook
    web: Any | None = None  # web.routes.Web, once the HTTP routes are registered
    webhooks: WebhookOutbox | None = None  # [[notify.webhooks]] channels, when configured
    #: Swarm nodes and services for the fleet view (core.fleet.FleetSource); None: no swarm
    fleet_source: FleetSource | None = None
    swarm: SwarmBackend | None = None  # Docker Swarm services and nodes (a manager)
    swarm_watcher: SwarmWatcher | None = None


@dataclass(frozen=True)
class Overrides:
    """Parts a test (or an embedding program) supplies instead of the defaults."""

    docker: DockerEngine | None = None
    host: HostMetrics | Any | None = None
    processes: ProcessSupervisor | None = None
    hub: Any | None = None
    restarter: Any | None = None
    approvals: ApprovalFlow | Any | None = None
    fleet_source: FleetSource | Any | None = None
    swarm: SwarmBackend | None = None

    def given(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def build_services(
    deps: Deps, *, docker: bool = True, overrides: Overrides | None = None
) -> Services:
    """Every part this configuration needs (docker=False: no Docker backend at all)."""
    from mcp_server.wiring import assemble  # the one module that imports every part

    if deps.bound is not None and overrides is None:
        return deps.bound  # a second server on the same deps shares its parts
    services = assemble(deps, docker=docker, given=(overrides or Overrides()).given())
    deps.bind(services)
    return services
