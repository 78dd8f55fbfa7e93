"""A real `opsmedic serve` subprocess over stdio: clients in both eras, and a clean stdout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

from tests.helpers import REPO, clean_env, jsonrpc


def _transport(data_dir, *extra: str) -> StdioTransport:
    return StdioTransport(
        command=sys.executable,
        args=["-m", "mcp_server", "--log-level", "debug", *extra, "serve"],
        env=clean_env(OPSMEDIC_DATA_DIR=str(data_dir)),
        cwd=str(REPO),
    )


@pytest.mark.parametrize("mode", [{"mode": "legacy"}, {}], ids=["legacy", "modern"])
async def test_stdio_client_calls_tools(tmp_path, mode):
    async with Client(_transport(tmp_path), **mode) as c:
        names = {t.name for t in await c.list_tools()}
        note = await c.call_tool("write_audit_entry", {"event": "stdio", "detail": "hello"})
        verdict = await c.call_tool("verify_audit", {})
    assert {"write_audit_entry", "verify_audit", "list_incidents", "get_incident"} <= names
    assert note.structured_content["seq"] >= 1
    assert verdict.structured_content["ok"] is True


def test_stdout_is_only_jsonrpc_even_at_debug(tmp_path):
    """Raw protocol bytes: every stdout line must parse as a JSON-RPC message."""
    requests = [
        jsonrpc(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "0"},
            },
            1,
        ),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        jsonrpc("tools/list", {}, 2),
        jsonrpc("tools/call", {"name": "verify_audit", "arguments": {}}, 3),
        jsonrpc("tools/call", {"name": "get_incident", "arguments": {"incident_id": 7}}, 4),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "--log-level", "debug", "serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(OPSMEDIC_DATA_DIR=str(tmp_path)),
        cwd=REPO,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen: dict[int, dict] = {}
    lines: list[bytes] = []
    try:
        for req in requests:
            proc.stdin.write(req.encode() + b"\n")
            proc.stdin.flush()
            want = json.loads(req).get("id")
            while want is not None and want not in seen:
                line = proc.stdout.readline()
                assert line, proc.stderr.read().decode()[-2000:] if proc.stderr else "EOF"
                lines.append(line)
                msg = json.loads(line)
                assert msg["jsonrpc"] == "2.0"
                if "id" in msg:
                    seen[msg["id"]] = msg
    finally:
        proc.stdin.close()
        proc.wait(15)
    rest = proc.stdout.read()
    for line in [*lines, *rest.splitlines()]:
        assert json.loads(line)["jsonrpc"] == "2.0"
    assert seen[3]["result"]["structuredContent"]["ok"] is True
    assert seen[4]["result"]["isError"] is True
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "DEBUG" in stderr  # logs went to stderr, as they must
