"""Docker Swarm services and nodes as targets, on a real 3-manager swarm in namespaces.

Through MCP (in-process client) and the CLI: failing tasks open one incident per service,
a rolling restart heals it, a broken update is named by the RCA and rolled back, a node
lost opens a node incident that says where its tasks went and resolves when it is back.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import docker
import pytest
from fastmcp import Client

from agent_runner.rules import triage
from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import Incident, IncidentStatus
from tests.helpers import OPSMEDIC, REPO, clean_env, make_settings
from tests.swarm_support import SwarmCluster, wait_for

MANAGED = {"opsmedic.managed": "true"}
DB_DOWN = 'echo "ERROR cannot connect to db:5432: connection refused" >&2; sleep 1; exit 2'
# fails until the test writes /flag/ok (a host dir bind-mounted on every node)
CRASHY = f"if [ -e /flag/ok ]; then echo up; exec sleep 3600; fi; {DB_DOWN}"
BROKEN = 'echo "FATAL: config key DATABASE_URL is missing" >&2; exit 3'


def swarm_settings(tmp_path: Path, cluster: SwarmCluster, **policy: Any):
    return make_settings(
        tmp_path,
        mode="heal",
        swarm={"docker_host": cluster.manager.host, "poll_s": 1.0, "shortfall_s": 5.0},
        policy={"auto_restart": False, "verify_timeout_s": 90, "verify_stable_s": 2, **policy},
    )


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, cluster: SwarmCluster, **policy: Any):
    settings = swarm_settings(tmp_path, cluster, **policy)
    deps = Deps.build(settings)
    await deps.start()
    try:
        async with Client(create_server(settings, deps, docker=False)) as client:
            yield client, deps
    finally:
        await deps.stop()
        cluster.remove_services()


@pytest.fixture
async def server(tmp_path, swarm_cluster):
    async with serving(tmp_path, swarm_cluster) as got:
        yield got


async def incident_for(deps: Deps, target: str, timeout: float, check: Any = None) -> Incident:
    with anyio.fail_after(timeout):
        while True:
            for inc in await deps.store.list_incidents(limit=100):
                if inc.target == target and (check is None or check(inc)):
                    return inc
            await anyio.sleep(0.25)


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    return dict(result.structured_content or {})


def crashy_service(cluster: SwarmCluster, flags: Path) -> None:
    cluster.create_service(
        "crashy",
        ["sh", "-c", CRASHY],
        replicas=2,
        labels=MANAGED,
        mounts=[docker.types.Mount("/flag", str(flags), type="bind", read_only=True)],
        restart_policy=docker.types.RestartPolicy("on-failure", delay=500_000_000, max_attempts=2),
    )


async def test_failing_tasks_open_one_incident_and_a_rolling_restart_heals(
    server, swarm_cluster, tmp_path
):
    client, deps = server
    flags = tmp_path / "flags"
    flags.mkdir()
    crashy_service(swarm_cluster, flags)
    inc = await incident_for(deps, "service:crashy", 90, lambda i: i.detail.get("failures", 0) >= 3)
    assert inc.symptom in ("task_failures", "replicas_low")
    assert any("task: non-zero exit (2)" in e for e in inc.detail["errors"])
    assert any("connection refused" in t for t in inc.detail["log_summary"])
    await anyio.sleep(3)  # several more polls and failures: still one incident
    mine = [i for i in await deps.store.list_incidents(limit=100) if i.target == "service:crashy"]
    assert [i.id for i in mine] == [inc.id]

    got = await call(client, "get_incident", incident_id=inc.id)
    rca = triage(got, [])
    assert rca.category == "dependency"
    assert any("task: non-zero exit (2)" in e.line for e in rca.evidence)
    logs = await call(client, "tail_logs", source="service:crashy", lines=50)
    assert "[crashy." in logs["lines"] and "@swnode" in logs["lines"]
    listed = await call(client, "list_services")
    assert any(line.startswith("crashy | replicated | ") for line in listed["services"])
    one = await call(client, "list_services", name="crashy")
    assert one["desired"] == 2 and any("non-zero exit" in t for t in one["tasks"])

    (flags / "ok").write_text("db is back")
    out = await call(
        client, "restart", target="service:crashy", reason="db back", incident_id=inc.id
    )
    assert out["ok"] and out["restarted"] and "2/2 running" in out["verified"], out
    assert (await deps.store.get_incident(inc.id)).status == IncidentStatus.resolved


async def test_broken_update_is_named_by_the_rca_and_rolled_back(server, swarm_cluster):
    client, deps = server
    swarm_cluster.create_service("deploy", ["sh", "-c", "echo v1; exec sleep 3600"], labels=MANAGED)
    api = swarm_cluster.api()
    wait_for(lambda: _running(api, "deploy") == 2, 60, "deploy 2/2 running")
    swarm_cluster.update_command("deploy", ["sh", "-c", BROKEN])
    inc = await incident_for(deps, "service:deploy", 90, lambda i: "update" in i.detail)
    assert inc.detail["remedy"] == "rollback"
    assert any("ContainerSpec.Command" in c for c in inc.detail["update"]["changed"])
    rca = triage(await call(client, "get_incident", incident_id=inc.id), [])
    assert "the update is the first suspect" in rca.summary and not rca.restart_safe
    assert "rollback(target='service:deploy')" in rca.recommendation

    out = await call(
        client, "rollback", target="service:deploy", reason="bad deploy", incident_id=inc.id
    )
    assert out["ok"] and out["action"] == "rollback", out
    spec = api.inspect_service("deploy")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec["Command"] == ["sh", "-c", "echo v1; exec sleep 3600"]
    assert (await deps.store.get_incident(inc.id)).status == IncidentStatus.resolved
    audit = [e.tool for e in await deps.store.audit_entries()]
    assert "action:rollback" in audit
    refused = await client.call_tool(
        "rollback", {"target": "node:swnode1", "reason": "nope"}, raise_on_error=False
    )
    assert refused.is_error and "node" in refused.content[0].text


async def test_heal_mode_rolls_a_broken_update_back_by_itself(tmp_path, swarm_cluster):
    good = ["sh", "-c", "echo v1; exec sleep 3600"]
    async with serving(tmp_path, swarm_cluster, auto_restart=True) as (_client, deps):
        swarm_cluster.create_service("auto", good, labels=MANAGED)
        api = swarm_cluster.api()
        wait_for(lambda: _running(api, "auto") == 2, 60, "auto 2/2 running")
        swarm_cluster.update_command("auto", ["sh", "-c", BROKEN])
        inc = await incident_for(
            deps, "service:auto", 120, lambda i: i.status == IncidentStatus.resolved
        )
        assert inc.detail["remedy"] == "rollback"
        spec = api.inspect_service("auto")["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec["Command"] == good
        runs = await deps.store.list_actions(inc.opened_at, subject="service:auto")
        assert [(r.detail["action"], r.status) for r in runs] == [("rollback", "ok")]


def _running(api: docker.APIClient, name: str) -> int:
    svc = api.services(filters={"name": name}, status=True)
    return int(svc[0]["ServiceStatus"]["RunningTasks"]) if svc else 0


def test_cli_lists_services_and_nodes(swarm_cluster):
    swarm_cluster.create_service("clisvc", ["sleep", "3600"], replicas=1)
    env = {"OPSMEDIC_SWARM__DOCKER_HOST": swarm_cluster.manager.host}
    try:
        wait_for(lambda: _running(swarm_cluster.api(), "clisvc") == 1, 60, "clisvc running")
        out = _cli("services", **env)
        assert out.returncode == 0 and "clisvc | replicated | 1/1 running" in out.stdout, out
        out = _cli("services", "--nodes", **env)
        assert "swnode1 | manager (leader) | ready | active | reachable" in out.stdout, out
        out = _cli("services")
        assert out.returncode == 2 and "OPSMEDIC_SWARM__DOCKER_HOST" in out.stderr
    finally:
        swarm_cluster.remove_services()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPSMEDIC, *args],
        env=clean_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_node_lost_opens_an_incident_showing_moved_tasks_and_resolves(server, swarm_cluster):
    client, deps = server
    swarm_cluster.create_service("spread", ["sleep", "3600"], replicas=3, labels=MANAGED)
    api = swarm_cluster.api()
    wait_for(lambda: _running(api, "spread") == 3, 60, "spread 3/3 running")
    lost = swarm_cluster.nodes[2]
    lost.stop(signal.SIGKILL)
    try:
        inc = await incident_for(deps, f"node:{lost.hostname}", 60)
        assert inc.symptom == "node_down"
        moved = await incident_for(
            deps,
            f"node:{lost.hostname}",
            90,
            lambda i: any(" -> " in m for m in i.detail.get("moved", [])),
        )
        assert any(m.startswith("spread.") for m in moved.detail["moved"])
        nodes = await call(client, "list_services", nodes=True)
        assert any(line.startswith(f"{lost.hostname} | manager | down") for line in nodes["nodes"])
        assert not [
            i for i in await deps.store.list_incidents(limit=100) if i.target == "swarm:managers"
        ]
    finally:
        lost.start()
    with anyio.fail_after(90):
        while (await deps.store.get_incident(inc.id)).status != IncidentStatus.resolved:
            await anyio.sleep(0.5)
