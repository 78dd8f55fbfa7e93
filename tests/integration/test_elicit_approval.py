"""In-band approval by elicitation, in both protocol eras, and only when switched on."""

from __future__ import annotations

import sys

import anyio
import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings

MODES = [pytest.param({"mode": "legacy"}, id="legacy"), pytest.param({}, id="modern")]


@pytest.fixture
async def approval_world(tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import sys, time\nprint('up', flush=True)\ntime.sleep(0.2)\nsys.exit(2)\n")
    settings = make_settings(
        tmp_path,
        mode="heal",
        processes=[{"name": "w", "argv": [sys.executable, str(script)]}],
        policy={"approve": ["restart"], "elicit": True, "auto_restart": False,
                "verify_stable_s": 0.0},
    )  # fmt: skip
    deps = Deps.build(settings)
    await deps.start()
    yield create_server(settings, deps, docker=False), deps
    await deps.stop()


async def _incident(deps):
    with anyio.fail_after(10):
        while not (incs := await deps.store.list_incidents(limit=5)):
            await anyio.sleep(0.05)
    return incs[0]


def _handler(answer: bool, asked: list[str]):
    async def handle(message, response_type, params, context):
        asked.append(message)
        return answer

    return handle


@pytest.mark.parametrize("mode", MODES)
async def test_person_approves_in_the_client(approval_world, mode):
    server, deps = approval_world
    asked: list[str] = []
    async with Client(server, elicitation_handler=_handler(True, asked), **mode) as c:
        inc = await _incident(deps)
        r = await c.call_tool(
            "restart", {"target": "process:w", "reason": "crashed", "incident_id": inc.id}
        )
    assert asked and "process:w" in asked[0]
    assert r.structured_content["action"] == "restart"
    started = [e for e in await deps.store.audit_entries()
               if e.tool == "action:restart" and e.outcome == "started"]  # fmt: skip
    assert len(started) == 1 and "elicitation" in started[0].actor
    tool_entry = [e for e in await deps.store.audit_entries() if e.tool == "restart"][-1]
    assert tool_entry.decision == "approved_by_elicitation"


@pytest.mark.parametrize("mode", MODES)
async def test_person_declines_in_the_client(approval_world, mode):
    server, deps = approval_world
    asked: list[str] = []
    async with Client(server, elicitation_handler=_handler(False, asked), **mode) as c:
        await _incident(deps)
        r = await c.call_tool(
            "restart", {"target": "process:w", "reason": "crashed"}, raise_on_error=False
        )
    assert r.is_error and "declined" in r.content[0].text
    assert not [e for e in await deps.store.audit_entries() if e.tool == "action:restart"]


async def test_client_without_elicitation_falls_back_to_email(approval_world):
    server, deps = approval_world
    async with Client(server) as c:  # no handler: the client cannot be asked
        r = await c.call_tool(
            "restart", {"target": "process:w", "reason": "crashed"}, raise_on_error=False
        )
    assert r.is_error and "OPSMEDIC_APPROVERS" in r.content[0].text
    assert not [e for e in await deps.store.audit_entries() if e.tool == "action:restart"]


async def test_off_by_default_even_when_the_client_could_answer(approval_world):
    _, deps = approval_world
    settings = deps.settings.model_copy(
        update={"policy": deps.settings.policy.model_copy(update={"elicit": False})}
    )
    other = Deps.build(settings, store=deps.store)
    asked: list[str] = []
    async with Client(create_server(settings, other, docker=False),
                      elicitation_handler=_handler(True, asked)) as c:  # fmt: skip
        r = await c.call_tool(
            "restart", {"target": "process:w", "reason": "crashed"}, raise_on_error=False
        )
    assert not asked  # a headless client could have approved its own request
    assert r.is_error and "OPSMEDIC_APPROVERS" in r.content[0].text
