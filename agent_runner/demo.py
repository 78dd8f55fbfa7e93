"""`opsmedic demo`: the whole loop in under a minute on embedded defaults, narrated.

A managed process that crashes on its first run (and, when a Docker engine with a busybox
image is reachable, a container that does the same) -> detection -> RCA -> restart ->
verification -> audit chain verified. Everything lives in a temp dir that is removed after.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from fastmcp import Client

from agent_runner.advisor import Advisor, RulesAdvisor
from agent_runner.main import CLIENT_INFO
from agent_runner.runner import Runner
from mcp_server.settings import LlmSettings, Settings

FLAKY = """\
import os, sys, time
marker = sys.argv[1]
print("demo-worker: connecting to the queue", flush=True)
if not os.path.exists(marker):
    open(marker, "w").close()
    time.sleep(1.5)
    print("Traceback (most recent call last):", flush=True)
    print('  File "worker.py", line 12, in handle', flush=True)
    print("ZeroDivisionError: division by zero", flush=True)
    sys.exit(1)
print("demo-worker: healthy, processing jobs", flush=True)
time.sleep(3600)
"""
STEPS = 6


class Narrator:
    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.t0 = time.monotonic()

    def step(self, n: int, text: str) -> None:
        self.say(f"[{n}/{STEPS}] {text}")

    def say(self, text: str) -> None:
        print(f"{time.monotonic() - self.t0:5.1f}s  {text}", file=self.out, flush=True)


def demo_settings(tmp: Path) -> Settings:
    script = tmp / "worker.py"
    script.write_text(FLAKY)
    proc = {"name": "demo-worker", "argv": [sys.executable, str(script), str(tmp / "ran")]}
    return Settings.model_validate(
        {
            "data_dir": tmp / "data",
            "mode": "heal",
            "processes": [proc],
            "policy": {"auto_restart": False, "verify_stable_s": 1.0, "allow": ["container:*"]},
            "thresholds": {"interval_s": 3600},
        }
    )


CRASH_ONCE = (
    "if [ -f /ran ]; then echo healthy; sleep 3600; else touch /ran; sleep 2; "
    "echo 'ERROR cannot reach db:5432: Connection refused' >&2; exit 1; fi"
)
IMAGES = ("opsmedic-test/busybox:latest", "busybox:latest")


def start_flaky_container() -> tuple[Any, str]:
    """(container, note): a managed container that crashes once, when Docker can run one.
    The Docker SDK here plays the world OpsMedic watches, not OpsMedic itself."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception:
        return None, "no Docker engine reachable: showing the process part only"
    for image in IMAGES:
        try:
            client.images.get(image)
        except Exception:
            continue
        box = client.containers.run(
            image, ["sh", "-c", CRASH_ONCE], detach=True, network_mode="none",
            name=f"opsmedic-demo-{int(time.time())}", labels={"opsmedic.managed": "true"},
        )  # fmt: skip
        return box, f"managed container {box.name} started; it will crash in ~2 s"
    return None, f"Docker is up but none of {', '.join(IMAGES)} is present: process part only"


def demo_advisor(llm_url: str | None, llm_model: str, timeout_s: float) -> tuple[Advisor, str]:
    """(advisor, how the RCA is made): rules, or the model at `llm_url` with rules behind."""
    if not llm_url:
        return RulesAdvisor(), "rules RCA"
    from agent_runner.llm_advisor import LlmAdvisor
    from agent_runner.llm_openai import OpenAiCompatible

    llm = LlmSettings(provider="openai", base_url=llm_url, model=llm_model, timeout_s=timeout_s,
                      max_tokens=256)  # fmt: skip
    provider = OpenAiCompatible(llm_url, "demo", llm_model, llm.timeout_s,
                                max_tokens=llm.max_tokens)  # fmt: skip
    return LlmAdvisor(provider, llm=llm), f"RCA by the model at {llm_url} (rules if it fails)"


async def run_demo(
    out: Any = None,
    timeout_s: float | None = None,
    llm_url: str | None = None,
    llm_model: str = "local",
    llm_timeout_s: float = 120.0,
) -> int:
    say = Narrator(out)
    advisor, how = demo_advisor(llm_url, llm_model, llm_timeout_s)
    timeout_s = timeout_s or (2 * llm_timeout_s + 60 if llm_url else 55.0)
    box = None
    with tempfile.TemporaryDirectory(prefix="opsmedic-demo-") as tmp:
        settings = demo_settings(Path(tmp))
        from mcp_server.app import create_server

        say.step(1, f"starting OpsMedic: SQLite in {tmp}, {how}, heal mode")
        server = create_server(settings)
        try:
            async with Client(server, client_info=CLIENT_INFO) as client:
                runner = Runner(client, advisor, mode="heal", notify=False)
                box, note = await anyio.to_thread.run_sync(start_flaky_container)
                say.step(2, "managed process 'demo-worker' started; it will crash in ~1.5 s")
                say.say(f"        {note}")
                expected = {"process:demo-worker"} | ({f"container:{box.name}"} if box else set())
                with anyio.move_on_after(timeout_s) as scope:
                    ok = await _follow(runner, say, expected)
        finally:
            if box is not None:
                with contextlib.suppress(Exception):
                    box.remove(force=True)
        if scope.cancelled_caught:
            say.say(f"demo did not finish within {timeout_s:.0f} s")
            return 1
        return 0 if ok else 1


async def _follow(runner: Runner, say: Narrator, expected: set[str]) -> bool:
    _, first = await runner.call("wait_for_events")
    cursor = first["cursor"]
    results: list[bool] = []
    while expected:
        _, got = await runner.call("wait_for_events", cursor=cursor, timeout_s=5)
        cursor = got["cursor"]
        for event in got["events"]:
            if event["type"] == "incident.opened" and event.get("target") in expected:
                expected.discard(event["target"])
                results.append(await _one(runner, say, event))
    _, verdict = await runner.call("verify_audit")
    say.step(6, f"audit chain: {'verified' if verdict['ok'] else 'BROKEN'}, "
                f"{verdict['checked']} entries")  # fmt: skip
    return all(results) and bool(verdict["ok"])


async def _one(runner: Runner, say: Narrator, event: dict[str, Any]) -> bool:
    say.step(3, f"detected: incident #{event['incident_id']} {event['target']}: "
                f"{event['data'].get('title', '')}")  # fmt: skip
    await runner.handle(event["incident_id"])
    _, inc = await runner.call("get_incident", incident_id=event["incident_id"])
    rca = inc.get("rca") or {}
    say.step(4, f"RCA by {rca.get('author')}: {rca.get('category')}: {rca.get('summary')}")
    for line in (rca.get("evidence") or [])[:3]:
        say.say(f"        evidence [{line['source']}] {line['line'][:90]}")
    verified = [t["text"] for t in inc["timeline"] if t["text"].startswith("resolved")]
    outcome = verified[-1] if verified else f"status {inc['status']}"
    say.step(5, f"restart {event['target']} -> {outcome}")
    return bool(inc["status"] in ("resolved", "escalated"))
