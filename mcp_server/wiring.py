"""Build the backends and services a server uses, and run its watchers in the lifespan.

The one module that imports every part; mcp_server.services.build_services calls assemble().
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from mcp_server.backends.diskclean import DiskPlanner
from mcp_server.backends.docker.clean import DockerCleanerAdapter
from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.backends.host import HostMetrics
from mcp_server.backends.ingest.build import build_hub_client, build_restarter
from mcp_server.backends.mail.inbox import ImapWatcher
from mcp_server.backends.mail.outbox import Outbox
from mcp_server.backends.probes import ProbeScheduler
from mcp_server.backends.processes import ProcessSupervisor
from mcp_server.backends.swarm import SwarmBackend
from mcp_server.backends.webhooks.outbox import WebhookOutbox
from mcp_server.core.actions import Actions
from mcp_server.core.approval_flow import ApprovalFlow
from mcp_server.core.autoheal import AutoHealer
from mcp_server.core.detection import Detector
from mcp_server.core.duties import every, supervise, with_lease
from mcp_server.core.fleet import FleetWatch
from mcp_server.core.health import FLEET_DUTY, StoreProbe, intervals
from mcp_server.core.holds import Holds
from mcp_server.core.incidents import Incidents
from mcp_server.core.jobs import JobTracker
from mcp_server.core.monitors import Monitors
from mcp_server.core.reconcile import Reconciler
from mcp_server.core.swarm import SwarmWatcher
from mcp_server.deps import Deps
from mcp_server.drivers import Drivers
from mcp_server.drivers.container import ContainerDriver
from mcp_server.drivers.job import JobDriver
from mcp_server.drivers.node import NodeDriver
from mcp_server.drivers.process import ProcessDriver
from mcp_server.drivers.service import ServiceDriver
from mcp_server.safety.policy import Policy
from mcp_server.services import Services
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)


def assemble(deps: Deps, *, docker: bool, given: dict[str, Any]) -> Services:
    """Build every part (see mcp_server.services.build_services); `given` replaces defaults."""
    s = deps.settings
    engine = given.get("docker") or (DockerEngine() if docker else None)
    sup = given.get("processes")
    if sup is None and s.processes:
        sup = ProcessSupervisor(s.processes, s.data_dir / "processes")
    incidents = Incidents(deps.store, deps.bus, deps.instance)
    cleaner = DockerCleanerAdapter(engine, s.policy.selector) if engine is not None else None
    jobs = JobTracker(
        deps.store, deps.bus, incidents, deps.clock, auditor=deps.auditor,
        default_timeout_s=s.ingest.job_timeout_s, log_lines=s.ingest.log_lines_per_run,
    )  # fmt: skip
    hub = given.get("hub") or build_hub_client(s.ingest, jobs.handle, jobs.load_cursor)
    restarter = given.get("restarter") or build_restarter(s.ingest, hub)
    swarm = given.get("swarm") or build_swarm(s, engine)
    drivers = build_drivers(deps, engine, sup, jobs, restarter, swarm)
    policy = Policy(s, restartable=drivers.restartable)
    actions = Actions(deps, policy, drivers, incidents)
    autoheal = AutoHealer(deps, actions, incidents)
    detector = Detector(deps, incidents, autoheal, policy)
    probes = ProbeScheduler(s.probes, on_result=detector.on_probe) if s.probes else None
    limits = SwarmWatcher.limits_from(s)
    watcher = SwarmWatcher(deps, swarm, limits, detector.report) if swarm is not None else None
    return Services(
        policy=policy, incidents=incidents, jobs=jobs, drivers=drivers, actions=actions,
        autoheal=autoheal, detector=detector, docker=engine, processes=sup, probes=probes,
        hub=hub, restarter=restarter, host=given.get("host") or HostMetrics(),
        holds=Holds(deps.store, deps.auditor, deps.bus, lambda: deps.clock()),
        planner=DiskPlanner.from_settings(s, clock=deps.clock, docker=cleaner),
        monitors=Monitors(deps),
        outbox=Outbox(deps.store, s.smtp, deps.redactor, domain=_mail_domain(s)),
        approvals=given.get("approvals", ApprovalFlow(deps)),
        reconciler=Reconciler(deps, actions, incidents, autoheal, detector.report),
        store_probe=StoreProbe(deps), webhooks=_webhooks(deps),
        fleet=FleetWatch(deps, incidents), fleet_source=given.get("fleet_source") or swarm,
        swarm=swarm, swarm_watcher=watcher,
    )  # fmt: skip


def _webhooks(deps: Deps) -> WebhookOutbox | None:
    """The webhook channels' outbox; links go to notify.dashboard_url, else the HTTP bind."""
    s = deps.settings
    if not s.notify.webhooks:
        return None
    base = s.notify.dashboard_url
    if base is None:
        host = socket.gethostname() if s.http.host in ("0.0.0.0", "::", "") else s.http.host
        base = f"http://{f'[{host}]' if ':' in host else host}:{s.http.port}"
    return WebhookOutbox(deps.store, deps.bus, s.notify.webhooks, deps.redactor, deps.auditor, base)


def build_drivers(
    deps: Deps, engine: Any, sup: Any, jobs: JobTracker, restarter: Any, swarm: Any = None
) -> Drivers:
    """One driver per kind this configuration can act on, plus registered plugins."""
    pol = deps.settings.policy
    drivers = Drivers()
    if engine is not None:
        drivers.add(ContainerDriver(engine, pol))
    if swarm is not None:
        drivers.add(ServiceDriver(swarm, pol, SwarmWatcher.limits_from(deps.settings)))
        drivers.add(NodeDriver(swarm))
    if sup is not None:
        drivers.add(ProcessDriver(sup, pol))
    drivers.add(JobDriver(deps.store, jobs, restarter, pol))
    drivers.load_plugins(deps)
    return drivers


def build_swarm(s: Settings, engine: DockerEngine | None) -> SwarmBackend | None:
    """The swarm manager to watch: OPSMEDIC_SWARM__DOCKER_HOST, else (swarm.enabled) the
    Docker engine OpsMedic already watches; None when the swarm is not configured."""
    if s.swarm.docker_host:
        return SwarmBackend(DockerEngine(base_url=s.swarm.docker_host))
    if s.swarm.enabled and engine is not None:
        return SwarmBackend(engine)
    return None


@contextlib.asynccontextmanager
async def serving(deps: Deps) -> AsyncIterator[None]:
    """The server's running life, shared: the first entry opens the store and starts the
    watchers, the last exit stops them. `opsmedic run` enters it twice (the HTTP app and the
    in-process runner client) and must still watch each source once."""
    first = deps.serving_users == 0
    deps.serving_users += 1
    await deps.start()
    try:
        if first:
            deps.tasks["store"] = "running"
            async with watchers(deps):
                deps.live = anyio.Event()
                try:
                    yield
                    while deps.serving_users > 1:  # others still use the watchers
                        await deps.live.wait()
                finally:
                    deps.tasks["store"] = "stopped"
        else:
            yield
    finally:
        deps.serving_users -= 1
        live = deps.live
        if live is not None and not first:
            live.set()
            deps.live = anyio.Event()
        await deps.stop()


@contextlib.asynccontextmanager
async def watchers(deps: Deps) -> AsyncIterator[None]:
    """Start every watcher this configuration needs; stop them (and managed processes)."""
    x = deps.services
    detector = x.detector
    jobs: dict[str, Callable[[], Awaitable[object]]] = {}
    if x.docker is not None:
        jobs["docker-events"] = detector.watch_docker
    if x.processes is not None:
        await x.processes.start_all()
        jobs["process-exits"] = detector.watch_processes
    if x.probes is not None:
        jobs["probes"] = x.probes.run
    jobs["host-metrics"] = detector.watch_host
    jobs["reconcile"] = x.reconciler.run
    if x.swarm_watcher is not None:
        jobs["swarm"] = functools.partial(with_lease, deps, "swarm-watcher", x.swarm_watcher.run)
    if deps.settings.smtp.host:
        jobs["mail-outbox"] = x.outbox.run
    if x.webhooks is not None:
        jobs["webhooks"] = x.webhooks.run
    if deps.settings.imap.host and x.approvals is not None:
        watcher = ImapWatcher(deps.settings.imap, x.approvals.on_reply, deps.store)
        jobs["imap-replies"] = functools.partial(with_lease, deps, "imap-watcher", watcher.run)
    if x.hub is not None:
        jobs["hub-client"] = functools.partial(with_lease, deps, "hub-client", x.hub.run)
    jobs["job-stalls"] = functools.partial(x.jobs.watch_stalls, deps.settings.ingest.stall_check_s)
    if deps.settings.approvers and x.approvals is not None:
        jobs["approval-expiry"] = functools.partial(every, 30.0, x.approvals.expire)
    jobs["store"] = x.store_probe.run  # the duty behind the "store" status set above
    jobs[FLEET_DUTY] = x.fleet.run
    due = intervals(deps.settings)
    tasks = [
        asyncio.create_task(supervise(deps.duties, name, fn, interval_s=due.get(name, 60.0)))
        for name, fn in jobs.items()
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await x.autoheal.close()
        await x.jobs.close()
        if x.processes is not None:
            await x.processes.close()


def _mail_domain(settings: Settings) -> str:
    """The domain for Message-IDs and thread roots: the sender's, else localhost."""
    sender = settings.smtp.from_
    return sender.rpartition("@")[2] or "localhost"
