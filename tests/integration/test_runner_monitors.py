"""Monitors driven by the runner: each notify_on setting against a real SMTP server, run-once,
and an LLM judgement (scripted OpenAI-compatible server) that can only raise a verdict."""

from __future__ import annotations

import json
import sys

import pytest
from fastmcp import Client

from agent_runner.advisor import RulesAdvisor, advisor_from_settings
from agent_runner.main import CLIENT_INFO
from agent_runner.runner import Runner
from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings
from tests.llm_fakes import FakeOpenAI, Say

PY = sys.executable
OK_CMD = [PY, "-c", "print('INFO all good')"]
WARN_CMD = [PY, "-c", "print('WARNING queue is slow')"]
ALERT_CMD = [PY, "-c", "print('ERROR payments failing')"]


def _monitor(name, argv, notify_on, **extra):
    return {"name": name, "inputs": [{"kind": "command", "argv": argv}], "notify_on": notify_on,
            **extra}  # fmt: skip


CASES = [
    # (notify_on, command, verdict, mailed?)
    ("alert_only", WARN_CMD, "warn", False),
    ("alert_only", ALERT_CMD, "alert", True),
    ("warn_and_alert", OK_CMD, "ok", False),
    ("warn_and_alert", WARN_CMD, "warn", True),
    ("all", OK_CMD, "ok", True),
]


async def _run_once(tmp_path, smtp_server, monitors, llm=None):
    settings = make_settings(
        tmp_path, monitors=monitors, notify={"to": ["oncall@example.test"]},
        smtp={"host": smtp_server.host, "port": smtp_server.port}, **({"llm": llm} if llm else {}),
    )  # fmt: skip
    deps = Deps.build(settings)
    await deps.start()
    advisor = advisor_from_settings(settings) if llm else RulesAdvisor()
    intervals = {m["name"]: 300.0 for m in monitors}
    async with Client(create_server(settings, deps, docker=False), client_info=CLIENT_INFO) as c:
        report = await Runner(c, advisor, monitors=intervals).once()
    audit = await deps.store.audit_entries()
    await deps.stop()
    return report, audit


@pytest.mark.parametrize(("notify_on", "argv", "verdict", "mailed"), CASES)
async def test_notify_on(tmp_path, smtp_server, notify_on, argv, verdict, mailed):
    report, _ = await _run_once(tmp_path, smtp_server, [_monitor("m", argv, notify_on)])
    assert report.monitors == {"m": verdict}
    subjects = [str(m["Subject"]) for m in smtp_server.messages]
    assert (f"monitor m: {verdict.upper()}" in subjects) is mailed, subjects
    assert report.healthy is (verdict != "alert")  # --once exits non-zero on an alert


async def test_llm_can_raise_a_verdict_and_is_audited(tmp_path, smtp_server):
    answer = Say(json.dumps({"verdict": "alert", "reason": "all good is suspicious at 3am"}))
    with FakeOpenAI([answer]) as fake:
        llm = {"provider": "openai", "base_url": fake.base_url, "model": "judge-m"}
        monitor = _monitor("m", OK_CMD, "alert_only", prompt="Is the batch healthy?")
        report, audit = await _run_once(tmp_path, smtp_server, [monitor], llm=llm)
        sent = json.dumps(fake.requests[0].body)
    assert report.monitors == {"m": "alert"}
    assert "Is the batch healthy?" in sent and "UNTRUSTED" in sent.upper()
    notes = [e for e in audit if e.tool == "note:monitor:m"]
    assert notes and "judge-m judged alert" in notes[0].args["detail"]


async def test_llm_cannot_lower_a_verdict(tmp_path, smtp_server):
    with FakeOpenAI([Say(json.dumps({"verdict": "ok", "reason": "fine"}))]) as fake:
        llm = {"provider": "openai", "base_url": fake.base_url, "model": "judge-m"}
        monitor = _monitor("m", ALERT_CMD, "alert_only", prompt="Healthy?")
        report, _ = await _run_once(tmp_path, smtp_server, [monitor], llm=llm)
    assert report.monitors == {"m": "alert"}
