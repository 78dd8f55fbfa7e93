"""A new target kind is one driver plus its registration: proven with a real entry point."""

from __future__ import annotations

import sys

import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests import plugin_echo
from tests.helpers import make_settings


@pytest.fixture
def echo_plugin(tmp_path, monkeypatch):
    """Install a distribution's metadata on sys.path with an `opsmedic.drivers` entry point."""
    dist = tmp_path / "site" / "opsmedic_echo-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: opsmedic-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[opsmedic.drivers]\necho = tests.plugin_echo:make\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    plugin_echo.INSTANCE.__init__()  # type: ignore[misc]
    yield plugin_echo.INSTANCE
    sys.modules.pop("opsmedic_echo", None)


async def test_a_plugin_kind_is_healed_by_the_same_pipeline(tmp_path, echo_plugin):
    settings = make_settings(tmp_path, mode="heal", policy={"auto_restart": False})
    deps = Deps.build(settings)
    await deps.start()
    try:
        async with Client(create_server(settings, deps, docker=False)) as c:
            r = await c.call_tool("restart", {"target": "echo:svc", "reason": "plugin test"})
            assert r.structured_content["ok"] and echo_plugin.restarts == ["svc"]
            again = await c.call_tool(
                "restart", {"target": "echo:svc", "reason": "too soon"}, raise_on_error=False
            )
            assert again.is_error and again.structured_content["rule"] == "budget"
            other = await c.call_tool(
                "restart", {"target": "nope:svc", "reason": "unknown kind"}, raise_on_error=False
            )
            assert other.is_error and "echo" in other.content[0].text
            logs = await c.call_tool("tail_logs", {"source": "echo:svc"})  # logs by driver too
            assert "echo svc is up" in logs.structured_content["lines"]
        ledger = await deps.services.actions.ledger()
        assert len(ledger.history("echo:svc")) == 1  # the action record is in the store
    finally:
        await deps.stop()
