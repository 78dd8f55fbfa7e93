"""Monitors: structured inputs and operator commands, verdicts, windows, hung commands cut."""

from __future__ import annotations

import sys

import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings

FIFTY_LINES = "print('\\n'.join(map(str, range(50))))"


@pytest.fixture
async def monitor_client(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("INFO started\nINFO request ok\nWARNING slow query 2.1s\n")
    (logs / "err.log").write_text("INFO start\nERROR payment failed: timeout\n")
    py = sys.executable
    monitors = [
        {"name": "quiet", "inputs": [{"kind": "command", "argv": [py, "-c", "print('all good')"]}]},
        {"name": "slow", "inputs": [{"kind": "file", "path": str(logs / "app.log")}],
         "notify_on": "warn_and_alert"},
        {"name": "pay", "inputs": [{"kind": "file", "path": str(logs / "err.log"), "label": "pay"},
                                   {"kind": "metrics"}], "notify_on": "all"},
        {"name": "hang", "inputs": [{"kind": "command", "timeout_s": 0.5,
                                     "argv": [py, "-c", "import time; time.sleep(60)"]}]},
        {"name": "window", "window": {"max_lines": 5, "max_chars": 10_000},
         "inputs": [{"kind": "command", "argv": [py, "-c", FIFTY_LINES]}]},
    ]  # fmt: skip
    settings = make_settings(tmp_path, log_roots=[str(logs)], monitors=monitors)
    deps = Deps.build(settings)
    await deps.start()
    async with Client(create_server(settings, deps, docker=False)) as c:
        yield c, deps
    await deps.stop()


@pytest.mark.parametrize(
    ("name", "verdict"), [("quiet", "ok"), ("slow", "warn"), ("pay", "alert"), ("hang", "alert")]
)
async def test_verdicts(monitor_client, name, verdict):
    client, deps = monitor_client
    r = await client.call_tool("run_monitor", {"name": name})
    out = r.structured_content
    assert out["verdict"] == verdict, out
    run = await deps.store.get_run(out["run_id"])
    assert run is not None and run.kind == "monitor" and run.verdict == verdict


async def test_labels_and_hung_command_cut(monitor_client):
    client, _ = monitor_client
    pay = (await client.call_tool("run_monitor", {"name": "pay"})).structured_content
    assert any(line.startswith("[pay] ERROR payment failed") for line in pay["evidence"])
    hang = (await client.call_tool("run_monitor", {"name": "hang"})).structured_content
    assert "timed out" in hang["inputs"][0]["note"]


async def test_window_keeps_newest_lines(monitor_client):
    client, _ = monitor_client
    out = (await client.call_tool("run_monitor", {"name": "window"})).structured_content
    assert [line.split("] ")[1] for line in out["evidence"]] == ["45", "46", "47", "48", "49"]


async def test_unknown_monitor_names_the_configured_ones(monitor_client):
    client, _ = monitor_client
    r = await client.call_tool("run_monitor", {"name": "nope"}, raise_on_error=False)
    assert r.is_error and "quiet" in r.content[0].text
