"""Build the backends and services a server uses, and run its watchers in the lifespan.

Anything already present in deps.extras is kept, so tests can inject their own parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from mcp_server.approval_flow import ApprovalFlow
from mcp_server.backends.diskclean import DiskPlanner
from mcp_server.backends.docker_clean import DockerCleanerAdapter
from mcp_server.backends.docker_engine import DockerEngine
from mcp_server.backends.host import HostMetrics
from mcp_server.backends.ingest import build_hub_client, build_restarter
from mcp_server.backends.mail_in import ImapWatcher
from mcp_server.backends.mail_out import Outbox
from mcp_server.backends.probes import ProbeScheduler
from mcp_server.backends.processes import ProcessSupervisor
from mcp_server.core.actions import Actions
from mcp_server.core.autoheal import AutoHealer
from mcp_server.core.duties import every, supervise, with_lease
from mcp_server.core.health import intervals, store_probe
from mcp_server.core.holds import Holds
from mcp_server.core.reconcile import Reconciler
from mcp_server.deps import Deps
from mcp_server.detection import Detector
from mcp_server.drivers import Drivers
from mcp_server.drivers.container import ContainerDriver
from mcp_server.drivers.job import JobDriver
from mcp_server.drivers.process import ProcessDriver
from mcp_server.incidents import Incidents
from mcp_server.jobs import JobTracker
from mcp_server.monitors import Monitors
from mcp_server.safety.policy import Policy
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)


def build_services(deps: Deps, *, docker: bool = True) -> None:
    """Fill deps.extras with the default parts (docker=False: no Docker backend at all)."""
    s = deps.settings
    x = deps.extras
    if docker:
        x.setdefault("docker", DockerEngine())
    x.setdefault("host", HostMetrics())
    if s.processes:
        x.setdefault("processes", ProcessSupervisor(s.processes, s.data_dir / "processes"))
    x.setdefault("policy", Policy(s))
    x.setdefault("incidents", Incidents(deps.store, deps.bus))
    x.setdefault("holds", Holds(deps.store, deps.auditor, deps.bus, lambda: deps.clock()))
    cleaner = DockerCleanerAdapter(x["docker"], s.policy.selector) if "docker" in x else None
    x.setdefault("planner", DiskPlanner.from_settings(s, clock=deps.clock, docker=cleaner))
    x.setdefault("monitors", Monitors(deps))
    x.setdefault("outbox", Outbox(deps.store, s.smtp, deps.redactor, domain=_mail_domain(s)))
    x.setdefault("approvals", ApprovalFlow(deps))
    x.setdefault("jobs", JobTracker(
        deps.store, deps.bus, x["incidents"], deps.clock, auditor=deps.auditor,
        default_timeout_s=s.ingest.job_timeout_s, log_lines=s.ingest.log_lines_per_run,
    ))  # fmt: skip
    if "hub" not in x:
        x["hub"] = build_hub_client(s.ingest, x["jobs"].handle, x["jobs"].load_cursor)
    x.setdefault("restarter", build_restarter(s.ingest, x["hub"]))
    x.setdefault("drivers", build_drivers(deps))
    x.setdefault("healer", Actions(deps, x["policy"], x["drivers"], x["incidents"]))
    x.setdefault("autoheal", AutoHealer(deps, x["healer"], x["incidents"]))
    detector = x.setdefault("detector", Detector(deps, x["incidents"], x["autoheal"], x["policy"]))
    x.setdefault(
        "reconciler", Reconciler(deps, x["healer"], x["incidents"], x["autoheal"], detector.report)
    )


def build_drivers(deps: Deps) -> Drivers:
    """One driver per kind this configuration can act on, plus registered plugins."""
    x, pol = deps.extras, deps.settings.policy
    drivers = Drivers()
    if "docker" in x:
        drivers.add(ContainerDriver(x["docker"], pol))
    if "processes" in x:
        drivers.add(ProcessDriver(x["processes"], pol))
    drivers.add(JobDriver(deps.store, x["jobs"], x.get("restarter"), pol))
    drivers.load_plugins(deps)
    return drivers


@contextlib.asynccontextmanager
async def serving(deps: Deps) -> AsyncIterator[None]:
    """The server's running life, shared: the first entry opens the store and starts the
    watchers, the last exit stops them. `opsmedic run` enters it twice (the HTTP app and the
    in-process runner client) and must still watch each source once."""
    first = deps.extras.get("_serving", 0) == 0
    deps.extras["_serving"] = deps.extras.get("_serving", 0) + 1
    await deps.start()
    try:
        if first:
            deps.tasks["store"] = "running"
            async with watchers(deps):
                deps.extras["_live"] = anyio.Event()
                try:
                    yield
                    while deps.extras["_serving"] > 1:  # others still use the watchers
                        await deps.extras["_live"].wait()
                finally:
                    deps.tasks["store"] = "stopped"
        else:
            yield
    finally:
        deps.extras["_serving"] -= 1
        live = deps.extras.get("_live")
        if live is not None and not first:
            live.set()
            deps.extras["_live"] = anyio.Event()
        await deps.stop()


@contextlib.asynccontextmanager
async def watchers(deps: Deps) -> AsyncIterator[None]:
    """Start every watcher this configuration needs; stop them (and managed processes)."""
    x = deps.extras
    detector: Detector = x["detector"]
    jobs: dict[str, Callable[[], Awaitable[object]]] = {}
    if "docker" in x:
        jobs["docker-events"] = detector.watch_docker
    if "processes" in x:
        await x["processes"].start_all()
        jobs["process-exits"] = detector.watch_processes
    if deps.settings.probes:
        x.setdefault("probes", ProbeScheduler(deps.settings.probes, on_result=detector.on_probe))
        jobs["probes"] = x["probes"].run
    jobs["host-metrics"] = detector.watch_host
    jobs["reconcile"] = x["reconciler"].run
    if deps.settings.smtp.host:
        jobs["mail-outbox"] = x["outbox"].run
    if deps.settings.imap.host:
        watcher = ImapWatcher(deps.settings.imap, x["approvals"].on_reply, deps.store)
        x["imap"] = watcher
        jobs["imap-replies"] = functools.partial(with_lease, deps, "imap-watcher", watcher.run)
    if x.get("hub") is not None:
        jobs["hub-client"] = functools.partial(with_lease, deps, "hub-client", x["hub"].run)
    jobs["job-stalls"] = functools.partial(
        x["jobs"].watch_stalls, deps.settings.ingest.stall_check_s
    )
    if deps.settings.approvers:
        jobs["approval-expiry"] = functools.partial(every, 30.0, x["approvals"].expire)
    jobs["store"] = store_probe(deps).run  # the duty behind the "store" status set above
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
        await x["autoheal"].close()
        await x["jobs"].close()
        if "processes" in x:
            await x["processes"].close()


def _mail_domain(settings: Settings) -> str:
    """The domain for Message-IDs and thread roots: the sender's, else localhost."""
    sender = settings.smtp.from_
    return sender.rpartition("@")[2] or "localhost"
