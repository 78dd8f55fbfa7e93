"""The runner end to end: real Docker engine, real SMTP server, in-process MCP server."""

from __future__ import annotations

import anyio
import pytest
from fastmcp import Client

from agent_runner.advisor import RulesAdvisor
from agent_runner.main import CLIENT_INFO
from agent_runner.runner import Runner
from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings

MANAGED = {"opsmedic.managed": "true"}
CRASH_ONCE = (
    "if [ -f /ran ]; then echo ok; sleep 3600; else touch /ran; sleep 1; "
    "echo 'ConnectionRefusedError: [Errno 111] Connection refused' >&2; exit 1; fi"
)


@pytest.fixture
async def runner_world(tmp_path, docker_host, smtp_server):
    async def make(mode: str):
        settings = make_settings(
            tmp_path / mode,
            mode=mode,
            policy={"auto_restart": False, "verify_stable_s": 1.0},
            smtp={"host": smtp_server.host, "port": smtp_server.port},
            notify={"to": ["oncall@example.test"]},
        )
        deps = Deps.build(settings)
        await deps.start()
        return settings, deps

    return make


async def _run_until(runner: Runner, deps, predicate, timeout=40.0):
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run_forever, 0.5)
        with anyio.fail_after(timeout):
            while not await predicate(deps):
                await anyio.sleep(0.1)
        runner.stop()
        tg.cancel_scope.cancel()


async def test_heal_mode_restarts_and_resolves(runner_world, docker_env, smtp_server):
    settings, deps = await runner_world("heal")
    box = docker_env.run("api", CRASH_ONCE, labels=MANAGED)
    target = f"container:{box.name}"

    async def resolved(d):
        incs = [i for i in await d.store.list_incidents(limit=20) if i.target == target]
        return incs and incs[0].status.value == "resolved"

    async with Client(create_server(settings, deps), client_info=CLIENT_INFO) as client:
        await _run_until(Runner(client, RulesAdvisor(), mode="heal"), deps, resolved)
    inc = next(i for i in await deps.store.list_incidents(limit=20) if i.target == target)
    rca = await deps.store.get_rca(inc.id)
    assert rca is not None and rca.category == "dependency" and rca.author == "rules"
    kinds = [t.kind for t in inc.timeline]
    assert "rca" in kinds and any("verified" in t.text for t in inc.timeline)
    assert docker_env._get(box).status == "running"
    actors = {e.actor for e in await deps.store.audit_entries() if e.tool == "restart"}
    assert actors == {"runner"}  # every action the runner took is audited as the runner
    await deps.stop()


async def test_check_mode_changes_nothing_and_alerts(runner_world, docker_env, smtp_server):
    settings, deps = await runner_world("check")
    boxes = []

    async def alerted(_d):
        if not boxes:
            boxes.append(docker_env.run("api", CRASH_ONCE, labels=MANAGED))
        return any("[OPSMEDIC-" in str(m["Subject"]) for m in smtp_server.messages)

    async with Client(create_server(settings, deps), client_info=CLIENT_INFO) as client:
        await _run_until(Runner(client, RulesAdvisor(), mode="check"), deps, alerted)
    box = boxes[0]
    target = f"container:{box.name}"
    mail = next(m for m in smtp_server.messages if "[OPSMEDIC-" in str(m["Subject"]))
    text = mail.get_body(preferencelist=("plain",)).get_content()
    assert target in text and "Check mode" in text and "dependency" in text
    state = docker_env._get(box).attrs["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 1  # never restarted
    assert not [e for e in await deps.store.audit_entries() if e.tool == "action:restart"]
    await deps.stop()
