"""Maintenance holds as people use them: `opsmedic hold/release`, and held containers shown
by list_containers / inspect_container against a real Docker engine."""

from __future__ import annotations

import asyncio
import getpass
import os
import subprocess
from datetime import timedelta

import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import OPSMEDIC, REPO, clean_env, make_settings
from tests.integration.test_dashboard import CHROMIUM, _js, chromium
from tests.integration.web_support import opsmedic_http

MANAGED = {"opsmedic.managed": "true"}


def run(data_dir: object, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OPSMEDIC, *args],
        env=clean_env(OPSMEDIC_DATA_DIR=str(data_dir)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def audit_of(data_dir: object) -> list[tuple[str, str, str, str | None, str]]:
    async def read() -> list[tuple[str, str, str, str | None, str]]:
        store = SqliteStore(f"sqlite:///{data_dir}/opsmedic.db")
        await store.open()
        try:
            assert (await store.verify_audit()).ok
            return [
                (e.tool, e.actor, e.transport, e.target, e.outcome)
                for e in await store.audit_entries()
            ]
        finally:
            await store.close()

    return asyncio.run(read())


def test_cli_hold_status_release(tmp_path):
    held = run(tmp_path, "hold", "container:web", "--for", "30m", "--reason", "db migration")
    assert held.returncode == 0, held.stderr
    assert held.stdout.startswith("container:web HELD until ") and "db migration" in held.stdout
    status = run(tmp_path, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "holds    1 active" in status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith("container:web"))
    assert "db migration" in row and "cli:" in row and ("29m" in row or "30m" in row)
    released = run(tmp_path, "release", "container:web")
    assert released.returncode == 0 and "released" in released.stdout
    again = run(tmp_path, "release", "container:web")
    assert again.returncode == 0 and "had no hold" in again.stdout
    assert "holds    0 active" in run(tmp_path, "status").stdout
    me = f"cli:{getpass.getuser()}"
    assert audit_of(tmp_path) == [
        ("hold:set", me, "cli", "container:web", "ok"),
        ("hold:release", me, "cli", "container:web", "ok"),
        ("hold:release", me, "cli", "container:web", "noop"),
    ]


def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    cases = [
        (["hold", "container:web", "--for", "soon", "--reason", "x y"], "30m"),
        (["hold", "container:web", "--for", "9d", "--reason", "x y"], "at most 7d"),
        (["hold", "container:web", "--reason", "db migration"], "--for"),
        (["hold", "container:web", "--for", "30m"], "--reason"),
        (["hold", "web", "--for", "30m", "--reason", "x y"], "kind:name"),
        (["release", "web"], "kind:name"),
    ]
    for args, says in cases:
        out = run(tmp_path, *args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and says in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stdout == ""
    assert all(tool != "hold:set" for tool, *_ in audit_of(tmp_path))


async def test_held_containers_are_shown_as_held(tmp_path, docker_host, docker_env):
    web = docker_env.run("web", labels=MANAGED)
    cache = docker_env.run(
        "cache", labels={**MANAGED, "opsmedic.hold": "true", "opsmedic.hold.reason": "disk swap"}
    )
    db = docker_env.run("db", labels=MANAGED)
    deps = Deps.build(make_settings(tmp_path))
    await deps.start()
    try:
        async with Client(create_server(deps.settings, deps)) as c:
            args = {"target": f"container:{web.name}", "reason": "db migration", "until": "1h"}
            await c.call_tool("hold", args)
            listed = await c.call_tool("list_containers", {"selector": "opsmedic.managed=true"})
            inspected = await c.call_tool("inspect_container", {"name": web.name})
            by_label = await c.call_tool("inspect_container", {"name": cache.name})
            plain = await c.call_tool("inspect_container", {"name": db.name})
    finally:
        await deps.stop()
    lines = {line.split(" | ")[0]: line for line in listed.structured_content["containers"]}
    assert "HELD until " in lines[web.name] and "db migration" in lines[web.name]
    assert "HELD by label opsmedic.hold: disk swap" in lines[cache.name]
    assert "HELD" not in lines[db.name]
    held = inspected.structured_content["held"]
    assert (held["reason"], held["source"]) == ("db migration", "tool")
    assert held["remaining"] == "1h" or held["remaining"].startswith("59m")
    assert by_label.structured_content["held"]["source"] == "label"
    assert by_label.structured_content["held"]["until"] is None
    assert "held" not in plain.structured_content


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium missing: see install-deps")
async def test_dashboard_shows_held_targets(tmp_path, docker_host, docker_env):
    box = docker_env.run("maint", "exit 0", labels=MANAGED)  # stopped on purpose
    target = f"container:{box.name}"
    settings = make_settings(tmp_path / "data", mode="check")
    async with opsmedic_http(settings) as (base, deps), chromium(tmp_path / "profile") as page:
        holds = deps.services.holds
        until = holds.now() + timedelta(hours=2)
        await holds.hold(Target.parse(target), "swapping its disk", until, "alice")
        await page.goto(base + "/")
        badges = f"#targets tr[data-target={_js(target)}] .badge"
        shown = await page.wait_for(
            f"Array.from(document.querySelectorAll({_js(badges)})).map(b => b.textContent)"
            ".join(',')",
            timeout=30,
        )
        # held, and still an incident (down while desired running), marked held by the healer
        assert "held" in shown.split(","), shown
        line = await page.evaluate("document.getElementById('holds').textContent")
        assert target in line and "swapping its disk" in line and "alice" in line
        assert page.errors == []
