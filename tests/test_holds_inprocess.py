"""hold / release through a real in-memory MCP client: tools, audit, feed, policy, dashboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastmcp import Client

from mcp_server.app import create_http_app, create_server
from mcp_server.core.holds import Holds
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from tests.helpers import make_settings

MODES = [pytest.param({"mode": "legacy"}, id="legacy-2025-11-25"), pytest.param({}, id="modern")]


@pytest.fixture
async def deps(tmp_path):
    deps = Deps.build(make_settings(tmp_path))
    await deps.start()
    yield deps
    await deps.stop()


@pytest.fixture
def server(deps):
    return create_server(deps.settings, deps, docker=False)


async def test_tools_are_write_not_destructive(server):
    async with Client(server) as c:
        tools = {t.name: t for t in await c.list_tools()}
    for name in ("hold", "release"):
        ann = tools[name].annotations
        assert ann.read_only_hint is False and ann.destructive_hint is False
    assert set(tools["hold"].input_schema["required"]) == {"target", "reason", "until"}


@pytest.mark.parametrize("mode", MODES)
async def test_hold_then_release(server, deps, mode):
    async with Client(server, **mode) as c:
        cursor = (await c.call_tool("wait_for_events", {})).structured_content["cursor"]
        held = await c.call_tool(
            "hold", {"target": "container:web", "reason": "db migration", "until": "30m"}
        )
        events = await c.call_tool("wait_for_events", {"cursor": cursor, "timeout_s": 1})
        policy = json.loads((await c.read_resource("opsmedic://policy"))[0].text)
        gone = await c.call_tool("release", {"target": "container:web"})
        again = await c.call_tool("release", {"target": "container:web"})
    body = held.structured_content
    assert body["held"] is True and body["target"] == "container:web"
    assert body["reason"] == "db migration" and body["remaining"] == "30m"
    until = datetime.fromisoformat(body["until"])
    assert timedelta(minutes=29) < until - datetime.now(UTC) <= timedelta(minutes=30)
    assert [e["type"] for e in events.structured_content["events"]] == ["hold.set"]
    assert [h["target"] for h in policy["holds"]] == ["container:web"]
    assert gone.structured_content == {"target": "container:web", "released": True}
    assert again.structured_content["released"] is False
    assert "opsmedic.hold=true" in again.structured_content["note"]
    assert await deps.services.holds.active(Target("container", "web")) is None


async def test_hold_and_release_are_audited(server, deps):
    async with Client(server) as c:
        await c.call_tool(
            "hold", {"target": "job:invoice-bot", "reason": "re-keying", "until": "2h"}
        )
        await c.call_tool("release", {"target": "job:invoice-bot"})
    entries = [(e.tool, e.target, e.outcome) for e in await deps.store.audit_entries()]
    assert entries == [  # the service's own record, then the tool call's
        ("hold:set", "job:invoice-bot", "ok"),
        ("hold", "job:invoice-bot", "ok"),
        ("hold:release", "job:invoice-bot", "ok"),
        ("release", "job:invoice-bot", "ok"),
    ]
    assert (await deps.store.verify_audit()).ok


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"target": "container:web", "reason": "db migration", "until": "soon"}, "30m"),
        ({"target": "container:web", "reason": "db migration", "until": "30d"}, "at most 7d"),
        (
            {"target": "container:web", "reason": "db migration", "until": "2020-01-01T00:00:00Z"},
            "future",
        ),
        ({"target": "web", "reason": "db migration", "until": "30m"}, "kind:name"),
    ],
)
async def test_bad_input_says_what_to_write(server, deps, args, says):
    async with Client(server) as c:
        r = await c.call_tool("hold", args, raise_on_error=False)
    assert r.is_error and says in r.content[0].text
    assert await deps.store.list_holds() == []
    (entry,) = await deps.store.audit_entries()
    assert (entry.tool, entry.outcome) == ("hold", "error")


async def test_dashboard_overview_lists_holds(server, deps):
    holds: Holds = deps.services.holds
    until = holds.now() + timedelta(hours=1)
    await holds.hold(Target("process", "worker"), "disk swap", until, "alice")
    app = create_http_app(server, deps.settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        body = (await client.get("/api/overview")).json()
    (hold,) = body["holds"]
    assert (hold["target"], hold["by"], hold["reason"]) == ("process:worker", "alice", "disk swap")


async def test_triage_prompt_says_what_is_held(server, deps):
    holds: Holds = deps.services.holds
    until = holds.now() + timedelta(hours=1)
    await holds.hold(Target("job", "invoice-bot"), "re-keying", until, "alice")
    async with Client(server) as c:
        everything = (await c.get_prompt("triage", {"scope": "all"})).messages[0].content.text
        containers = (await c.get_prompt("triage", {"scope": "container"})).messages[0].content
    assert "job:invoice-bot HELD until " in everything and "re-keying" in everything
    assert "never propose restarting" in everything
    assert "job:invoice-bot" not in containers.text
