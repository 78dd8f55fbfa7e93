"""The swarm watcher in a real in-process server, against a fake manager (plain API documents):
one incident per service whatever the polls, a repeat only for new failures, resolution when
fine, and a critical quorum incident when the manager says the swarm has no leader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.backends.swarm.engine import SwarmSnapshot, build_snapshot
from mcp_server.deps import Deps
from mcp_server.errors import Unavailable
from mcp_server.models import Incident, IncidentStatus, Severity
from mcp_server.services import Overrides
from tests.helpers import make_settings
from tests.swarm_docs import node, service, task, ts

NO_LEADER = "rpc error: code = Unknown desc = The swarm does not have a leader."


class FakeManager:
    """What SwarmBackend offers the watcher, from documents the test edits."""

    host = "fake://manager"

    def __init__(self) -> None:
        self.nodes = [node(1), node(2), node(3)]
        self.services: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.error: str | None = None

    async def check_manager(self) -> None:
        return None

    async def snapshot(self) -> SwarmSnapshot:
        if self.error:
            raise Unavailable(f"docker engine error: {self.error}")
        return build_snapshot(self.nodes, self.services, self.tasks)

    async def spec(self, name: str) -> dict[str, Any]:
        return {"ID": f"svc-{name}", "Spec": {"Name": name}}  # no previous spec: no update

    async def logs(self, name: str, lines: int = 200, since: Any = None) -> list[str]:
        return [
            f"2026-01-01T00:00:00.000Z [{name}.{i}@n1] ERROR connection refused" for i in (1, 2)
        ]

    async def events(self) -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield ""


async def _wait(deps: Deps, target: str, check: Any) -> Incident:
    with anyio.fail_after(10):
        while True:
            for inc in await deps.store.list_incidents(limit=50):
                if inc.target == target and check(inc):
                    return inc
            await anyio.sleep(0.02)


async def test_one_incident_per_service_repeats_for_new_failures_and_quorum(tmp_path) -> None:
    fake = FakeManager()
    now = datetime.now(UTC)
    fake.services = [service(now=now)]
    fake.tasks = [
        task(1, "failed", 3, now=now),
        task(2, "failed", 2, now=now),
        task(1, "failed", 1, now=now),
    ]
    settings = make_settings(tmp_path, swarm={"enabled": True, "poll_s": 0.05})
    deps = Deps.build(settings)
    await deps.start()
    async with Client(create_server(settings, deps, docker=False, overrides=Overrides(swarm=fake))):
        inc = await _wait(deps, "service:web", lambda i: i.symptom == "task_failures")
        assert inc.count == 1 and inc.detail["failures"] == 3
        assert any("connection refused" in t for t in inc.detail["log_summary"])
        assert inc.detail["replicas_logging"] == ["web.1", "web.2"]
        await anyio.sleep(0.5)  # ten polls, nothing new
        assert (await deps.store.get_incident(inc.id)).count == 1  # type: ignore[union-attr]

        fake.tasks.append(task(2, "failed", 0, now=datetime.now(UTC)))
        again = await _wait(deps, "service:web", lambda i: i.count == 2)
        assert again.id == inc.id and again.detail["failures"] == 4

        fake.services = [
            service(update={"State": "completed", "StartedAt": ts(0, datetime.now(UTC))})
        ]
        fake.tasks = [task(1, "running", 0, now=datetime.now(UTC))]
        await _wait(deps, "service:web", lambda i: i.status == IncidentStatus.resolved)

        fake.error = NO_LEADER
        quorum = await _wait(deps, "swarm:managers", lambda i: i.symptom == "quorum_at_risk")
        assert quorum.severity == Severity.critical and "no leader" in quorum.title
        fake.error = None
        await _wait(deps, "swarm:managers", lambda i: i.status == IncidentStatus.resolved)
        actives = [
            i
            for i in await deps.store.list_incidents(limit=50)
            if i.status != IncidentStatus.resolved
        ]
        assert actives == []
    await deps.stop()
