"""The LLM path against a REAL model server: llama.cpp's llama-server with SmolLM2-135M on
loopback (tests/llama_support.py; `make llm-deps` builds it). The model is tiny and mostly
wrong or off-format, which is the point: whatever it says, OpsMedic stays correct."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from fastmcp import Client

from agent_runner.advisor import advisor_from_settings
from agent_runner.llm_advisor import LlmAdvisor
from agent_runner.llm_guard import prompt_chars
from agent_runner.llm_openai import OpenAiCompatible
from agent_runner.llm_rca import rca_with_fallback
from agent_runner.main import CLIENT_INFO
from agent_runner.runner import Runner
from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.settings import LlmSettings
from tests.helpers import OPSMEDIC, clean_env, make_settings, wait_until
from tests.integration._run_support import MANAGED, OpsRun
from tests.llama_support import MODEL_NAME, LlamaServer

CRASH = "echo starting; sleep 1; echo 'ERROR cannot reach db:5432: Connection refused' >&2; exit 1"
INCIDENT: dict[str, Any] = {"id": 1, "target": "container:web", "symptom": "died",
                            "detail": {"exit_code": 1}, "count": 1}  # fmt: skip
LOG = "ERROR cannot reach db:5432: Connection refused"
#: A tiny model on a shared 2-core machine can be slow (5 tokens/s seen under load): answers
#: are kept short (a cut answer is rejected, which these tests accept) and time is generous.
SHORT = {"OPSMEDIC_LLM__MAX_TOKENS": "128"}
SLOW = pytest.mark.timeout(1200)


class Counting(OpenAiCompatible):
    """The real provider, counting its calls."""

    calls = 0

    async def chat(self, messages: Any, tools: Any) -> Any:
        self.calls += 1
        return await super().chat(messages, tools)


def _rca_of(run: OpsRun, box_name: str) -> dict[str, Any] | None:
    rows = run.incidents(f"container:{box_name}")
    if not rows:
        return None
    rca = run.get(f"/api/incidents/{rows[0]['id']}")["rca"]
    return {**rca, "incident_id": rows[0]["id"]} if rca else None


def _model_answered(rca: dict[str, Any]) -> bool:
    """The model's RCA was used, or it answered and the answer was rejected (noted)."""
    return rca["author"] != "rules" or rca["summary"].startswith("model answer rejected: ")


def _llm_duty(run: OpsRun) -> str:
    return str(run.get("/healthz")["tasks"].get("llm", ""))


@SLOW
def test_check_mode_with_the_real_model_records_an_rca_per_incident(
    tmp_path, docker_host, docker_env
):
    with LlamaServer(tmp_path) as llama:
        env = llama.provider_env(OPSMEDIC_LLM__TIMEOUT_S="240", **SHORT)
        run = OpsRun(tmp_path, "check", "--mode", "check", DOCKER_HOST=docker_host, **env)
        run.start()
        try:
            boxes = [docker_env.run(f"crash{i}", CRASH, labels=MANAGED) for i in range(2)]
            rcas = [wait_until(lambda b=b: _rca_of(run, b.name), timeout=600) for b in boxes]
            logs = [" ".join(b.logs().decode(errors="replace").split()) for b in boxes]
            audit = run.get("/api/audit?limit=500")["entries"]
            healthz = run.get("/healthz")
        finally:
            run.close()
    for rca, log in zip(rcas, logs, strict=True):
        assert _model_answered(rca), rca  # the model's if valid, else rules + the rejection
        assert rca["category"] in ("oom", "config", "dependency", "resource", "permission",
                                   "port_conflict", "code", "unknown")  # fmt: skip
        if rca["author"] != "rules":  # the model cites nothing the logs do not contain
            assert all(" ".join(e["line"].split()) in log for e in rca["evidence"]), rca
        raw = [e for e in audit if e["tool"] == "note:llm_rca"
               and e["incident_id"] == rca["incident_id"]]  # fmt: skip
        assert raw and "raw:" in raw[0]["args"]["detail"], audit[:5]
    assert healthz["tasks"]["llm"].startswith("running"), healthz
    assert "Traceback" not in run.log(), run.log()[-3000:]


@SLOW
async def test_a_prompt_longer_than_the_context_is_retried_smaller_then_rules(tmp_path):
    with LlamaServer(tmp_path, ctx=1024) as llama:
        provider = OpenAiCompatible(llama.base_url, "k", MODEL_NAME, 60.0, max_tokens=128)
        advisor = LlmAdvisor(provider, llm=LlmSettings(max_tokens=128))
        assert await advisor.context() == 1024  # read from llama.cpp's /props
        huge = "## Log evidence\n" + f"{LOG}\n" * 1500 + "## Your answer\nJSON please"

        async def no_tools(name: str, args: dict[str, Any]) -> str:
            return "error: no tools here"

        evidence = [("container:web", LOG)]
        unbudgeted = await rca_with_fallback(provider, INCIDENT, evidence, huge, no_tools, [],
                                             max_steps=2, timeout_s=240)  # fmt: skip
        fitted = await rca_with_fallback(
            provider, INCIDENT, evidence, huge, no_tools, [], max_steps=2,
            prompt_chars=prompt_chars(1024, 128), timeout_s=240,
        )  # fmt: skip
    # the real server refused the whole prompt; one smaller try, then the rules
    assert unbudgeted.outcome is not None and unbudgeted.outcome.overflow, unbudgeted
    assert len(unbudgeted.prompt_sizes) == 2
    assert unbudgeted.prompt_sizes[1] < unbudgeted.prompt_sizes[0]
    assert unbudgeted.author == "rules"
    assert unbudgeted.rca["summary"].startswith("LLM failed (prompt exceeds the model's context")
    # cut to the budget read from /props, the prompt fits: the model answers (or is rejected)
    assert fitted.outcome is not None and not fitted.outcome.overflow, fitted
    assert len(fitted.prompt_sizes) == 1 and not fitted.outcome.provider_error


@SLOW
def test_server_killed_mid_run_falls_back_opens_the_breaker_and_closes_it_again(
    tmp_path, docker_host, docker_env
):
    llama = LlamaServer(tmp_path).start()
    env = llama.provider_env(
        OPSMEDIC_LLM__TIMEOUT_S="240",
        OPSMEDIC_LLM__BREAKER_FAILURES="2",
        **SHORT,
        OPSMEDIC_LLM__BREAKER_COOLDOWN_S="15",
    )
    run = OpsRun(tmp_path, "check", "--mode", "check", DOCKER_HOST=docker_host, **env).start()
    try:
        assert _llm_duty(run).startswith("running")
        llama.kill()
        for i in range(2):  # connection refused: rules, with the reason on the incident
            box = docker_env.run(f"down{i}", CRASH, labels=MANAGED)
            rca = wait_until(lambda b=box: _rca_of(run, b.name), timeout=120)
            assert rca["author"] == "rules" and rca["summary"].startswith("LLM failed ("), rca
            assert "cannot connect" in rca["summary"], rca
        duty = _llm_duty(run)  # visible in /healthz (and the dashboard's duties line)
        assert duty.startswith("waiting") and "circuit open after 2 failure(s)" in duty, duty
        assert run.get("/healthz")["ok"] is True  # a missing model is no liveness failure
        llama.start()  # the server returns on the same port
        answered: dict[str, Any] | None = None
        for i in range(40):  # after the cooldown, one trial call closes the breaker
            box = docker_env.run(f"back{i}", CRASH, labels=MANAGED)
            rca = wait_until(lambda b=box: _rca_of(run, b.name), timeout=600)
            if _model_answered(rca):
                answered = rca
                break
            assert rca["summary"].startswith("LLM not asked (circuit open"), rca
        assert answered is not None
        assert _llm_duty(run).startswith("running"), _llm_duty(run)
    finally:
        run.close()
        llama.kill()
    assert "Traceback" not in run.log(), run.log()[-3000:]


@SLOW
async def test_monitor_judgement_by_the_real_model_can_only_raise_the_verdict(tmp_path):
    alert = [sys.executable, "-c", "print('ERROR payments failing')"]
    calm = [sys.executable, "-c", "print('INFO all good')"]
    monitors = [{"name": n, "inputs": [{"kind": "command", "argv": a}], "prompt": "Is it ok?"}
                for n, a in (("alert", alert), ("calm", calm))]  # fmt: skip
    with LlamaServer(tmp_path) as llama:
        llm = {"provider": "openai", "base_url": llama.base_url, "model": MODEL_NAME,
               "api_key": "k", "timeout_s": 240, "max_tokens": 128}  # fmt: skip
        settings = make_settings(tmp_path, monitors=monitors, llm=llm)
        deps = Deps.build(settings)
        await deps.start()
        built = advisor_from_settings(settings)
        assert isinstance(built, LlmAdvisor)
        provider = Counting(llama.base_url, "k", MODEL_NAME, 240.0, max_tokens=128)
        advisor = LlmAdvisor(provider, llm=settings.llm)
        server = create_server(settings, deps, docker=False)
        async with Client(server, client_info=CLIENT_INFO) as c:
            runner = Runner(c, advisor, monitors={"alert": 300.0, "calm": 300.0}, notify=False)
            verdicts = {name: await runner.run_monitor(name) for name in ("alert", "calm")}
        audit = await deps.store.audit_entries()
        await deps.stop()
    assert verdicts["alert"] == "alert"  # the rules said alert: no model can lower it
    assert verdicts["calm"] in ("ok", "warn", "alert")
    # the real server was asked twice and answered both (a failure would count against the
    # breaker); whether its verdicts were usable or not, nothing crashed
    assert provider.calls == 2
    assert advisor.breaker.streak == 0 and advisor.breaker.state == "closed"
    judged = [e for e in audit if e.tool.startswith("note:monitor:")]
    for entry in judged:  # a valid judgement is kept in the audit, with the model's name
        assert MODEL_NAME in str(entry.args) or "judged" in str(entry.args)


@SLOW
def test_demo_shows_the_loop_with_the_real_model(tmp_path):
    with LlamaServer(tmp_path) as llama:
        out = subprocess.run(
            [*OPSMEDIC, "demo", "--llm", llama.base_url, "--llm-model", MODEL_NAME,
             "--llm-timeout", "400"],
            env=clean_env(DOCKER_HOST="unix:///nonexistent.sock"),  # the process part only
            cwd=tmp_path, capture_output=True, text=True, timeout=1000,
        )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert f"RCA by the model at {llama.base_url}" in out.stdout, out.stdout
    [rca_line] = [line for line in out.stdout.splitlines() if "[4/6] RCA by" in line]
    # the model's answer, or the rules' with the model's rejection spelled out
    assert f"RCA by {MODEL_NAME}" in rca_line or "model answer rejected: " in rca_line, rca_line
    assert "[6/6] audit chain: verified" in out.stdout
