"""The Swarm backend: services, tasks and nodes through a manager's API.

Reuses the Docker backend's plumbing (`DockerEngine`: one docker-py `APIClient`, calls in
worker threads, errors translated once) against a swarm manager: the same engine OpsMedic
watches, or the one OPSMEDIC_SWARM__DOCKER_HOST names. One `snapshot()` reads nodes, services
(with their replica counts) and tasks in three API calls; listings, detection and the
dashboard all read that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import docker

from mcp_server.backends.docker.engine import DockerEngine
from mcp_server.backends.swarm.format import (
    NodeRow,
    ServiceRow,
    TaskRow,
    describe,
    node_row,
    service_row,
    task_row,
)
from mcp_server.errors import Conflict, InvalidInput, Unavailable

logger = logging.getLogger(__name__)

MAX_LOG_LINES = 5000
EVENTS_RETRY_S = 2.0
MAX_LINE_CHARS = 2000
FLEET_ROWS = 200  # services / nodes shown in the fleet view
#: Swarm's own names: letters, digits, '-', '_' and '.'; nothing else reaches a URL path
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")
_DETAIL = re.compile(r"^(\S+) (\S*com\.docker\.swarm\.\S*) ?(.*)$")


def check_name(name: str, what: str) -> None:
    if not NAME.fullmatch(name):
        raise InvalidInput(f"{name!r} is not a swarm {what} name; call list_services for names")


@dataclass(frozen=True)
class SwarmSnapshot:
    """Everything at one moment: nodes, services (with counts) and their tasks."""

    nodes: list[NodeRow]
    services: list[ServiceRow]
    tasks: list[TaskRow]
    at: datetime

    def service(self, name: str) -> ServiceRow | None:
        return next((s for s in self.services if s.name == name), None)

    def node(self, name: str) -> NodeRow | None:
        return next((n for n in self.nodes if n.name == name or n.id == name), None)


class SwarmBackend:
    """Async facade over one swarm manager (services, tasks, nodes)."""

    def __init__(self, engine: DockerEngine) -> None:
        self.engine = engine

    @property
    def host(self) -> str:
        return self.engine.host

    async def _call(self, func: Any, name: str = "", what: str = "service") -> Any:
        return await self.engine._run(func, name, what)  # the Docker backend's own plumbing

    async def check_manager(self) -> None:
        """Unavailable (saying what to do) unless this engine is a reachable swarm manager."""
        info = await self._call(lambda api: api.info())
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise Unavailable(
                f"the Docker engine at {self.host} is not a swarm manager "
                f"(state {swarm.get('LocalNodeState') or 'inactive'}); point "
                "OPSMEDIC_SWARM__DOCKER_HOST at a manager"
            )

    async def snapshot(self) -> SwarmSnapshot:
        def work(api: docker.APIClient) -> SwarmSnapshot:
            node_docs = api.nodes()
            service_docs = api.services(status=True)
            task_docs = api.tasks()
            return build_snapshot(node_docs, service_docs, task_docs)

        return await self._call(work)

    async def list_services(self) -> list[ServiceRow]:
        """Every service, sorted by name: replicas desired/running, update, errors, nodes."""
        return (await self.snapshot()).services

    async def list_nodes(self) -> list[NodeRow]:
        """Every node, sorted by name: status, availability, reachability, engine."""
        return (await self.snapshot()).nodes

    async def fleet_services(self) -> list[dict[str, Any]]:
        """The fleet view's rows (core.fleet.FleetSource): replicas per service."""
        return [
            {"name": r.name, "mode": r.mode, "desired": r.desired, "running": r.running,
             "image": r.image, "updated_at": r.changed_at.isoformat() if r.changed_at else None}
            for r in (await self.list_services())[:FLEET_ROWS]
        ]  # fmt: skip

    async def fleet_nodes(self) -> list[dict[str, Any]]:
        """The fleet view's rows (core.fleet.FleetSource): one per node."""
        return [
            {"name": n.name, "role": n.role, "state": n.status, "availability": n.availability,
             "leader": n.leader, "engine": n.engine}
            for n in (await self.list_nodes())[:FLEET_ROWS]
        ]  # fmt: skip

    async def service(self, name: str) -> tuple[ServiceRow, list[TaskRow]]:
        """One service's row and its tasks (newest first). NotFound when absent."""
        check_name(name, "service")
        doc = await self._call(lambda api: api.inspect_service(name), name)
        snap = await self.snapshot()
        row = snap.service(str(doc["Spec"]["Name"]))
        if row is None:  # removed between the two calls
            raise Unavailable(f"service {name!r} changed while being read; retry")
        tasks = [t for t in snap.tasks if t.service == row.name]
        tasks.sort(key=lambda t: t.at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return row, tasks

    async def spec(self, name: str) -> dict[str, Any]:
        """The service's inspect document (Spec, PreviousSpec, UpdateStatus...)."""
        check_name(name, "service")
        return await self._call(lambda api: api.inspect_service(name), name)

    async def logs(self, name: str, lines: int = 200, since: datetime | None = None) -> list[str]:
        """Last `lines` lines of all the service's tasks, each tagged `SERVICE.SLOT@NODE`."""
        check_name(name, "service")
        tail = max(1, min(int(lines), MAX_LOG_LINES))
        since_s = int(since.timestamp()) if since is not None else 0
        snap = await self.snapshot()
        hosts = {n.id: n.name for n in snap.nodes}  # ids cut to 12, as tag_line looks them up
        labels = {t.id: t.label for t in snap.tasks}

        def work(api: docker.APIClient) -> list[str]:
            out = api.service_logs(
                name,
                details=True,
                stdout=True,
                stderr=True,
                timestamps=True,
                tail=tail,
                since=since_s,
                is_tty=False,
            )
            return [tag_line(line, name, hosts, labels) for line in _lines(out)]

        got = await self._call(work, name)
        return sorted(got)[-tail:]  # interleaved replicas, ordered by their timestamps

    async def force_update(self, name: str) -> None:
        """A rolling restart: `docker service update --force`, the service's update config."""

        def work(api: docker.APIClient) -> None:
            doc = api.inspect_service(name)
            template = dict(doc["Spec"]["TaskTemplate"])
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
            api.update_service(
                doc["ID"], doc["Version"]["Index"], task_template=template, fetch_current_spec=True
            )

        check_name(name, "service")
        await self._call(work, name)

    async def rollback(self, name: str) -> None:
        """The engine's rollback to the previous spec (`docker service rollback`)."""

        def work(api: docker.APIClient) -> None:
            doc = api.inspect_service(name)
            if not doc.get("PreviousSpec"):
                raise Conflict(f"service {name} has no previous spec to roll back to")
            url = api._url("/services/{0}/update", doc["ID"])
            params = {"version": doc["Version"]["Index"], "rollback": "previous"}
            res = api._post_json(url, data=doc["Spec"], params=params)
            api._raise_for_status(res)

        check_name(name, "service")
        await self._call(work, name)

    async def events(self) -> AsyncIterator[str]:
        """`service update`, `node update`, ... as the manager reports them: a hint to look
        again now, not the truth (the snapshot is). Reconnects while iterated; a dedicated
        client without a read timeout, since the stream is quiet most of the time."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        stop, streams = threading.Event(), []

        def put(item: str) -> None:
            if not queue.full():
                queue.put_nowait(item)

        def read() -> None:
            while not stop.is_set():
                try:
                    api = self._streaming_client()
                    stream = api.events(filters={"type": ["service", "node"]}, decode=True)
                    streams.append(stream)
                    for raw in stream:
                        loop.call_soon_threadsafe(put, f"{raw.get('Type')} {raw.get('Action')}")
                except Exception as exc:  # the poll still runs; events only make it sooner
                    logger.debug("swarm events: %s; reconnecting", exc)
                stop.wait(EVENTS_RETRY_S)

        threading.Thread(target=read, name="swarm-events", daemon=True).start()
        try:
            while True:
                yield await queue.get()
        finally:
            stop.set()
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.close()

    def _streaming_client(self) -> docker.APIClient:
        kwargs: dict[str, Any] = docker.utils.kwargs_from_env()  # TLS as for `docker -H`
        return docker.APIClient(**{**kwargs, "base_url": self.host}, version="auto", timeout=None)

    async def converged(self, name: str, before: datetime | None = None) -> tuple[bool, str, int]:
        """After a restart or rollback: its update has begun (the change time is no longer
        `before`) and ended, desired == running, no update paused; and the count of task
        failures since the change (the caller checks it does not grow while it waits)."""
        row, _ = await self.service(name)
        if before is not None and row.changed_at == before:
            return False, "the update has not begun yet", row.failures
        ok = row.running >= row.desired and not row.converging and not row.update_stuck
        return ok, describe(row), row.failures

    async def wait_converged(
        self, name: str, timeout_s: float, stable_s: float, before: datetime | None = None
    ) -> tuple[bool, str]:
        """Poll until the service has converged and stays so for `stable_s` with no task
        failing meanwhile. A task that failed early in the rolling update (before what it
        waited for came back) does not fail a service that has run clean since."""
        deadline = anyio.current_time() + timeout_s
        since: float | None = None
        failures_at_since = 0
        detail = "not read yet"
        while anyio.current_time() < deadline:
            ok, detail, failures = await self.converged(name, before)
            now = anyio.current_time()
            if not ok or (since is not None and failures > failures_at_since):
                since = None
            elif since is None:
                since, failures_at_since = now, failures
            if since is not None and now - since >= stable_s:
                return True, f"{detail} for {stable_s:g}s with no new task failure"
            await anyio.sleep(0.5)
        return False, f"not converged after {timeout_s:g}s: {detail}"


def build_snapshot(
    node_docs: list[dict[str, Any]],
    service_docs: list[dict[str, Any]],
    task_docs: list[dict[str, Any]],
) -> SwarmSnapshot:
    """Pure: the three API documents lists -> typed rows (tests pass plain dicts)."""
    nodes = sorted((node_row(d) for d in node_docs), key=lambda n: n.name)
    hostnames = {
        str(d.get("ID", "")): n.name
        for d, n in zip(node_docs, map(node_row, node_docs), strict=True)
    }
    names = {str(d.get("ID", "")): str((d.get("Spec") or {}).get("Name", "")) for d in service_docs}
    tasks = [task_row(t, names.get(str(t.get("ServiceID", "")), "?"), hostnames) for t in task_docs]
    by_service: dict[str, list[TaskRow]] = {}
    for task in tasks:
        by_service.setdefault(task.service, []).append(task)
    services = [
        service_row(d, by_service.get(names[str(d.get("ID", ""))], [])) for d in service_docs
    ]
    services.sort(key=lambda s: s.name)
    return SwarmSnapshot(nodes, services, tasks, datetime.now(UTC))


#: spec fields every update touches: not what "the update changed"
_INCIDENTAL = frozenset({"ForceUpdate"})


def spec_change(doc: dict[str, Any], limit: int = 8) -> list[str]:
    """What the last update changed (PreviousSpec -> Spec), `Path: old -> new`, bounded."""
    prev, cur = doc.get("PreviousSpec"), doc.get("Spec")
    if not isinstance(prev, dict) or not isinstance(cur, dict):
        return []
    return _diff(prev, cur, "")[:limit]


def _diff(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            if key not in _INCIDENTAL:
                out += _diff(a.get(key), b.get(key), f"{path}.{key}" if path else key)
        return out
    if a == b or ((_blank(a) or _blank(b)) and path.rpartition(".")[2] not in _KEY_FIELDS):
        return []  # a field a client filled with the engine's defaults is not a change
    return [f"{path}: {str(a)[:120]} -> {str(b)[:120]}"]


_KEY_FIELDS = frozenset({"Image", "Command", "Args", "Env", "Mounts", "Secrets", "Configs"})


def _blank(value: Any) -> bool:
    return value is None or value == {} or value == []


def _lines(out: Any) -> list[str]:
    chunks = [out] if isinstance(out, bytes | str) else list(out)
    text = "".join(c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in chunks)
    return [line for line in text.splitlines() if line.strip()]


def tag_line(line: str, service: str, hosts: dict[str, str], labels: dict[str, str]) -> str:
    """`TS com.docker.swarm.node.id=N,...,com.docker.swarm.task.id=T MSG` ->
    `TS [service.slot@node] MSG` (the timestamp cut to the millisecond)."""
    m = _DETAIL.match(line)
    if m is None:
        return line[:MAX_LINE_CHARS]
    ts, details, msg = m.groups()
    attrs = dict(kv.partition("=")[::2] for kv in details.split(","))
    node = hosts.get(attrs.get("com.docker.swarm.node.id", "")[:12], "?")
    task = attrs.get("com.docker.swarm.task.id", "")[:12]
    stamp = ts[:23] + "Z" if len(ts) > 23 else ts
    return f"{stamp} [{labels.get(task, f'{service}.{task}')}@{node}] {msg}"[:MAX_LINE_CHARS]
