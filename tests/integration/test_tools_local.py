"""Managed processes, probes, log files and disk clean-up through a real MCP client."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import anyio
import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus, Run, utcnow
from mcp_server.services import Overrides
from tests.helpers import free_port, make_settings

FLAKY = (
    "import os, sys, time\n"
    "marker = sys.argv[1]\n"
    "print('worker starting', flush=True)\n"
    "if not os.path.exists(marker):\n"
    "    open(marker, 'w').close()\n"
    "    time.sleep(0.3)\n"
    "    print('Traceback: boom', file=sys.stderr, flush=True)\n"
    "    sys.exit(3)\n"
    "time.sleep(3600)\n"
)


@pytest.fixture
async def make_client(tmp_path):
    """Yield a factory: settings overrides -> (client, deps), all closed at the end."""
    stack: list = []

    async def make(**overrides):
        settings = make_settings(tmp_path / f"d{len(stack)}", **overrides)
        deps = Deps.build(settings)
        await deps.start()
        client = Client(create_server(settings, deps, docker=False))
        await client.__aenter__()
        stack.append((client, deps))
        return client, deps

    yield make
    for client, deps in reversed(stack):
        await client.__aexit__(None, None, None)
        await deps.stop()


async def _incident(deps, target, statuses=None, timeout=15.0):
    with anyio.fail_after(timeout):
        while True:
            for inc in await deps.store.list_incidents(limit=100):
                if inc.target == target and (statuses is None or inc.status in statuses):
                    return inc
            await anyio.sleep(0.05)


async def test_flaky_process_is_restarted_in_heal_mode(tmp_path, make_client):
    script = tmp_path / "worker.py"
    script.write_text(FLAKY)
    proc = {"name": "worker", "argv": [sys.executable, str(script), str(tmp_path / "ran")]}
    client, deps = await make_client(mode="heal", processes=[proc], policy={"verify_stable_s": 0.5})
    inc = await _incident(deps, "process:worker", {IncidentStatus.resolved})
    assert inc.symptom == "exited" and "code 3" in inc.title
    logs = await client.call_tool("tail_logs", {"source": "process:worker", "lines": 20})
    assert "Traceback: boom" in logs.structured_content["lines"]
    metrics = await client.call_tool("read_metrics", {"scope": "processes"})
    (row,) = metrics.structured_content["processes"]
    assert row["running"] is True and row["restarts"] == 1


async def test_failing_probe_opens_and_recovery_resolves(make_client):
    port = free_port()
    probe = {"name": "api", "kind": "tcp", "host": "127.0.0.1", "port": port, "interval_s": 0.2}
    _client, deps = await make_client(probes=[probe])
    inc = await _incident(deps, "probe:api")
    assert inc.symptom == "probe_failed" and "refused" in inc.title

    async def accept(stream):
        await stream.aclose()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, accept)
        await _incident(deps, "probe:api", {IncidentStatus.resolved})
        tg.cancel_scope.cancel()


async def test_tail_logs_files_only_under_roots(tmp_path, make_client):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("".join(f"line {i}\n" for i in range(1000)))
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read\n")
    (logs / "escape.log").symlink_to(secret)
    client, _ = await make_client(log_roots=[str(logs)])
    ok = await client.call_tool("tail_logs", {"source": f"file:{logs}/app.log", "lines": 3})
    assert ok.structured_content["lines"] == "line 997\nline 998\nline 999"
    for bad in (f"file:{secret}", f"file:{logs}/../secret.txt", f"file:{logs}/escape.log"):
        r = await client.call_tool("tail_logs", {"source": bad}, raise_on_error=False)
        assert r.is_error and str(logs) in r.content[0].text, bad  # names the allowed root


async def test_clean_disk_plan_then_apply_exactly(tmp_path, make_client):
    root = tmp_path / "junk"
    root.mkdir()
    for i in range(3):
        (root / f"old{i}.log").write_text("x" * 100)
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.log").write_text("precious")
    (root / "link").symlink_to(canary)
    rules = [{"glob": "*.log", "min_age_s": 0}]
    client, _deps = await make_client(mode="heal", clean_roots=[str(root)], clean={"rules": rules})
    plan = (await client.call_tool("clean_disk", {"action": "plan"})).structured_content
    paths = json.dumps(plan)
    assert "old0.log" in paths and "keep.log" not in paths
    (root / "old1.log").write_text("changed since the plan")
    done = await client.call_tool("clean_disk", {"action": "apply", "plan_id": plan["plan_id"]})
    result = done.structured_content
    assert sorted(p.name for p in root.iterdir()) == ["link", "old1.log"]
    assert "old1.log" in json.dumps(result["skipped"])
    assert (canary / "keep.log").read_text() == "precious"
    outside = await client.call_tool(
        "clean_disk", {"action": "plan", "root": str(canary)}, raise_on_error=False
    )
    assert outside.is_error and "OPSMEDIC_CLEAN_ROOTS" in outside.content[0].text


async def test_tool_catalogue_stays_small(make_client):
    client, _ = await make_client()
    tools = await client.list_tools()
    size = sum(len(json.dumps(t.model_dump(mode="json", exclude_none=True))) for t in tools)
    # 20 tools; hold + release added ~1,000 chars, bounded ints and closed parameter
    # objects (issue 12) ~700, tail_logs budget ~200: still ~560 chars per tool
    assert size < 11_500, size
    assert all(t.annotations is not None for t in tools)


async def test_no_docker_engine_is_one_clear_sentence(tmp_path):
    from mcp_server.backends.docker.engine import DockerEngine

    settings = make_settings(tmp_path)
    deps = Deps.build(settings)
    engine = DockerEngine(base_url=f"unix://{tmp_path}/no-such.sock")
    await deps.start()
    async with Client(create_server(settings, deps, overrides=Overrides(docker=engine))) as c:
        r = await c.call_tool("list_containers", {}, raise_on_error=False)
        ok = await c.call_tool("list_incidents", {})  # everything else keeps working
    await deps.stop()
    text = r.content[0].text
    assert r.is_error and "no Docker engine reachable" in text and "DOCKER_HOST" in text
    assert text.count(". ") <= 1 and "Traceback" not in text
    assert ok.structured_content["incidents"] == []


async def test_restart_budget_survives_a_restart_of_opsmedic(tmp_path):
    """Action records in the store count against the budget of a new server."""
    proc = {"name": "w", "argv": [sys.executable, "-c", "import time; time.sleep(60)"]}
    settings = make_settings(tmp_path, mode="heal", processes=[proc])
    earlier = Deps.build(settings)
    await earlier.start()
    for i in range(3):  # what a previous OpsMedic process did to process:w
        at = utcnow() - timedelta(seconds=30 * (3 - i))
        await earlier.store.put_run(Run(
            id=f"action-earlier-{i}", kind="action", subject="process:w", status="failed",
            started_at=at, finished_at=at + timedelta(seconds=2), detail={"deadline": 0},
        ))  # fmt: skip
    await earlier.stop()
    deps = Deps.build(settings)
    await deps.start()
    async with Client(create_server(settings, deps, docker=False)) as c:
        r = await c.call_tool(
            "restart", {"target": "process:w", "reason": "again"}, raise_on_error=False
        )
    await deps.stop()
    assert r.is_error and "budget is exhausted" in r.content[0].text
