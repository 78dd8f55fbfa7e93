"""Replay labelled failures through real containers and read the RCA OpsMedic assigns.

Each case (a line of ../shared/diagnosis/rca-dev.jsonl) becomes a busybox container that
prints the case's log and then ends as the case ended: its exit code, or a real kernel OOM
kill (32 MB limit, then memory exhausted) when `oom_killed` is true. An in-process OpsMedic
server watches the engine; the runner in check mode triages every incident with the rules;
the category is read back with get_incident, as a user would see it.

Used by bench/bench_rca.py (all cases) and tests/integration/test_rca_replay.py (a few).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import docker
from fastmcp import Client

from agent_runner.advisor import RulesAdvisor
from agent_runner.main import CLIENT_INFO
from agent_runner.runner import Runner
from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.settings import Settings

MANAGED = {"opsmedic.managed": "true"}
OOM_LIMIT = "32m"
# busybox sh: a 200 MB string in a 32 MB cgroup; the kernel OOM killer ends it
EAT_MEMORY = "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"


def diagnosis_dir() -> Path:
    env = os.environ.get("OPSMEDIC_DIAGNOSIS_DIR")
    return (
        Path(env) if env else (Path(__file__).resolve().parents[1] / ".." / "shared" / "diagnosis")
    )


def load_cases(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or diagnosis_dir() / "rca-dev.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def command(case: dict[str, Any]) -> str:
    """Print the log (from $CASE_LOG, so no quoting of its text), then end as the case did."""
    end = EAT_MEMORY if case.get("oom_killed") else f"exit {case.get('exit_code') or 1}"
    return f'printf "%s\\n" "$CASE_LOG"; {end}'


def start(client: docker.DockerClient, image: str, case: dict[str, Any]) -> str:
    """Run one case's container (detached); its name."""
    name = f"case-{uuid.uuid4().hex[:8]}"
    extra: dict[str, Any] = {}
    if case.get("oom_killed"):
        extra = {"mem_limit": OOM_LIMIT, "memswap_limit": OOM_LIMIT}
    client.containers.run(
        image,
        ["sh", "-c", command(case)],
        name=name,
        labels=MANAGED,
        environment={"CASE_LOG": case["log"]},
        network_mode="none",
        detach=True,
        **extra,
    )
    return name


async def replay(
    client: docker.DockerClient,
    image: str,
    cases: Iterable[dict[str, Any]],
    data_dir: Path,
    timeout_s: float = 300.0,
) -> dict[str, dict[str, Any]]:
    """{case id: get_incident's answer (with "rca")} for every case, via the real pipeline."""
    settings = Settings(data_dir=data_dir, mode="check", policy={"auto_restart": False})
    deps = Deps.build(settings)
    await deps.start()
    names: dict[str, str] = {}
    try:
        async with Client(create_server(settings, deps), client_info=CLIENT_INFO) as mcp:
            runner = Runner(mcp, RulesAdvisor(), mode="check", notify=False)
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run_forever, 0.5)
                await anyio.sleep(1.0)  # the server follows engine events before containers die
                names = {start(client, image, c): c["id"] for c in cases}
                found = await _wait_for_rcas(mcp, set(names), timeout_s)
                runner.stop()
                tg.cancel_scope.cancel()
    finally:
        await deps.stop()
        for name in names:
            with contextlib.suppress(docker.errors.APIError):
                client.containers.get(name).remove(force=True)
    return {names[n]: inc for n, inc in found.items()}


async def _wait_for_rcas(
    mcp: Client[Any], names: set[str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Poll list_incidents/get_incident until every container's incident has an RCA."""
    done: dict[str, dict[str, Any]] = {}
    with anyio.move_on_after(timeout_s):
        while len(done) < len(names):
            listed = await mcp.call_tool("list_incidents", {"limit": 200})
            for row in _rows(listed.structured_content):
                name = str(row.get("target", "")).removeprefix("container:")
                if name in names and name not in done:
                    got = await mcp.call_tool("get_incident", {"incident_id": row["id"]})
                    inc = dict(got.structured_content or {})
                    if inc.get("rca"):
                        done[name] = inc
            await anyio.sleep(0.5)
    return done


def _rows(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, dict):
        for key in ("incidents", "result"):
            if isinstance(content.get(key), list):
                return list(content[key])
    return []
