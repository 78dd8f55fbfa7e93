"""The official MCP Inspector CLI (a real third-party client) lists our tools over stdio and HTTP.

Needs npm (registry.npmjs.org). If npx cannot fetch the inspector, the test is skipped with a
loud reason: this is the only test allowed to skip, and only for that reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import cache

import pytest

from tests.helpers import REPO, clean_env, http_server

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
TOKEN = "inspector-token-0123456789"
EXPECTED = {"write_audit_entry", "verify_audit", "list_incidents", "get_incident"}


@cache
def _npx_ready() -> str | None:
    """None when the inspector can run; otherwise the reason it cannot."""
    if shutil.which("npx") is None:
        return "npx is not installed"
    try:
        out = subprocess.run(
            ["npx", "-y", INSPECTOR, "--cli", "--version"],
            capture_output=True,
            text=True,
            timeout=240,
        )
    except subprocess.TimeoutExpired:
        return "npx timed out fetching the inspector (npm registry unreachable?)"
    return None if out.returncode == 0 else f"npx failed: {out.stderr[-500:]}"


def _inspect(*args: str, env: dict[str, str] | None = None) -> dict:
    reason = _npx_ready()
    if reason:
        print(f"\n!!! SKIPPING MCP Inspector test: {reason} !!!", file=sys.stderr)
        pytest.skip(f"MCP Inspector unavailable: {reason}")
    out = subprocess.run(
        ["npx", "-y", INSPECTOR, "--cli", "-q", "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-1000:] + out.stderr[-2000:]
    return json.loads(out.stdout)


def test_inspector_lists_tools_over_stdio(tmp_path):
    result = _inspect(
        "-e",
        f"OPSMEDIC_DATA_DIR={tmp_path}",
        sys.executable,
        "-m",
        "mcp_server",
        "serve",
        "--method",
        "tools/list",
        env=clean_env(),
    )
    names = {t["name"] for t in result["result"]["tools"]}
    assert names >= EXPECTED


def test_inspector_lists_tools_and_calls_over_http(tmp_path):
    with http_server(tmp_path, OPSMEDIC_AUTH__TOKENS=TOKEN) as (base, _):
        listed = _inspect(
            "--transport",
            "http",
            "--server-url",
            f"{base}/mcp",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--method",
            "tools/list",
            env=clean_env(),
        )
        called = _inspect(
            "--transport",
            "http",
            "--server-url",
            f"{base}/mcp",
            "--header",
            f"Authorization: Bearer {TOKEN}",
            "--method",
            "tools/call",
            "--tool-name",
            "verify_audit",
            env=clean_env(),
        )
    assert {t["name"] for t in listed["result"]["tools"]} >= EXPECTED
    assert called["result"]["structuredContent"]["ok"] is True
