"""Issue 12, item 6: an observe-mode server lists and runs no tool that writes or destroys;
OPSMEDIC_TOOLS__DISABLE removes named tools; calls to hidden tools name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import http_server, make_settings

MODES = [pytest.param({"mode": "legacy"}, id="legacy"), pytest.param({}, id="modern")]
CHANGING = {"restart", "clean_disk", "send_email", "run_monitor", "write_audit_entry"}
CHANGING |= {"record_rca", "update_incident"}


@pytest.mark.parametrize("mode", MODES)
async def test_observe_mode_over_http(tmp_path: Path, mode: dict[str, str]) -> None:
    env = {"OPSMEDIC_MODE": "observe", "OPSMEDIC_TOOLS__DISABLE": "tail_logs"}
    with http_server(tmp_path, **env) as (base, _proc):
        async with Client(StreamableHttpTransport(base + "/mcp"), **mode) as c:
            listed = {t.name for t in await c.list_tools()}
            restart = await c.call_tool(
                "restart", {"target": "container:web", "reason": "x"}, raise_on_error=False
            )
            tail = await c.call_tool("tail_logs", {"source": "job:x"}, raise_on_error=False)
            audit = await c.read_resource("opsmedic://audit/recent")
    assert not listed & CHANGING and "tail_logs" not in listed
    assert {"list_incidents", "verify_audit", "get_incident"} <= listed
    assert restart.is_error and "OPSMEDIC_MODE" in restart.content[0].text
    assert tail.is_error and "OPSMEDIC_TOOLS__DISABLE" in tail.content[0].text
    assert '"refused"' in audit[0].text


async def test_check_mode_lists_everything_but_disabled(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, tools={"disable": "clean_disk"})
    deps = Deps.build(settings)
    async with Client(create_server(settings, deps, docker=False)) as c:
        listed = {t.name for t in await c.list_tools()}
        r = await c.call_tool("clean_disk", {"action": "plan"}, raise_on_error=False)
    assert CHANGING - {"clean_disk"} <= listed and "clean_disk" not in listed
    assert r.is_error and "OPSMEDIC_TOOLS__DISABLE" in r.content[0].text
