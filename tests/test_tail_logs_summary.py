"""tail_logs(mode="summary") through the MCP protocol: the budget argument and its bounds."""

from __future__ import annotations

from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.tools.logs import SUMMARY_BUDGET
from tests.helpers import make_settings


async def test_summary_budget_is_an_argument_with_bounds(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [
        f"2024-01-01T00:00:{i % 60:02d}Z INFO request {i} served in {i % 9}ms" for i in range(3000)
    ]
    lines[100] = "2024-01-01T00:01:40Z kernel: EXT4-fs error (device sda1): bad block bitmap"
    lines[2000] = "2024-01-01T00:33:20Z worker: Failed to flush journal: Read-only file system"
    (logs / "app.log").write_text("\n".join(lines) + "\n")
    settings = make_settings(tmp_path / "d", log_roots=[str(logs)])
    deps = Deps.build(settings)
    await deps.start()
    try:
        async with Client(create_server(settings, deps, docker=False)) as c:
            src = {"source": f"file:{logs}/app.log", "mode": "summary"}
            small = await c.call_tool("tail_logs", {**src, "budget": 1500})
            default = await c.call_tool("tail_logs", src)
            bad = await c.call_tool("tail_logs", {**src, "budget": 10}, raise_on_error=False)
    finally:
        await deps.stop()
    tight, roomy = small.structured_content["summary"], default.structured_content["summary"]
    for text in (tight, roomy):
        assert "-fs error (device <N>): bad block bitmap" in text  # no level token needed
        assert "Failed to flush journal: Read-only file system" in text
        assert text.startswith("log summary: 3000 lines")
    assert len(tight) <= 1500 and len(tight) < len(roomy) <= SUMMARY_BUDGET
    assert bad.is_error
