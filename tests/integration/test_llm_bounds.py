"""The bounds on a real model's answers, against a scripted OpenAI-compatible server on a
real socket that reproduces llama-server's behaviours: context errors, hangs, off-format
answers, made-up evidence. (tests/integration/test_llm_real.py runs the real llama-server.)"""

from __future__ import annotations

import json
from typing import Any

from agent_runner.llm_advisor import LlmAdvisor
from agent_runner.llm_base import RetryPolicy
from agent_runner.llm_openai import OpenAiCompatible
from agent_runner.llm_rca import rca_with_fallback
from agent_runner.providers import provider_from_settings
from mcp_server.core.duties import Duties
from mcp_server.settings import LlmSettings
from tests.llm_fakes import Fail, FakeOpenAI, Hang, Say

LOG_LINE = "psycopg2.OperationalError: could not connect to server: Connection refused"
INCIDENT: dict[str, Any] = {"id": 3, "target": "container:web", "symptom": "died",
                            "detail": {"exit_code": 1}, "count": 1}  # fmt: skip
EVIDENCE = [("container:web", "INFO starting"), ("container:web", LOG_LINE)]
GOOD = {
    "summary": "web could not reach its database",
    "category": "dependency",
    "evidence": [{"source": "container:web", "line": LOG_LINE}],
    "recommendation": "check the db",
    "restart_safe": True,
    "confidence": 0.7,
}
LLAMA_OVERFLOW = "the request exceeds the available context size, try increasing it"
PROMPT = "## Incident\nweb died\n## Log evidence\n" + "ERROR boom\n" * 2000 + "## Your answer\n{}"
ONE_TRY = RetryPolicy(tries=1, deadline_s=30)


async def no_tools(name: str, args: dict[str, Any]) -> str:
    raise AssertionError(f"no tool call expected, got {name}")


def provider(fake: FakeOpenAI, timeout_s: float = 10.0) -> OpenAiCompatible:
    return OpenAiCompatible(fake.base_url, "k", "m", timeout_s, max_tokens=300, retry=ONE_TRY)


async def rca(fake: FakeOpenAI, **kw: Any):  # type: ignore[no-untyped-def]
    return await rca_with_fallback(provider(fake), INCIDENT, EVIDENCE, PROMPT, no_tools, [], **kw)


async def test_every_request_carries_max_tokens_from_settings():
    with FakeOpenAI([Say(json.dumps(GOOD))]) as fake:
        llm = LlmSettings(provider="openai", base_url=fake.base_url, model="m", max_tokens=200)
        p = provider_from_settings(llm)
        assert p is not None
        await p.chat([], [])
    assert fake.requests[0].body["max_tokens"] == 200


async def test_context_overflow_is_retried_once_with_a_smaller_prompt():
    with FakeOpenAI([Fail(400, message=LLAMA_OVERFLOW), Say(json.dumps(GOOD))]) as fake:
        result = await rca(fake, prompt_chars=12_000)
        sent = [len(r.body["messages"][-1]["content"]) for r in fake.requests]
    assert result.author == "m" and result.rca == GOOD
    assert len(result.prompt_sizes) == 2 and result.prompt_sizes[1] < result.prompt_sizes[0]
    assert sent[1] < sent[0] <= 12_000
    assert "left out to fit the model's context" in fake.requests[1].text()


async def test_context_overflow_twice_falls_back_to_rules():
    script = [Fail(400, message=LLAMA_OVERFLOW), Fail(400, message=LLAMA_OVERFLOW)]
    with FakeOpenAI(script) as fake:
        result = await rca(fake, prompt_chars=12_000)
    assert result.author == "rules" and len(fake.requests) == 2
    assert result.rca["summary"].startswith("LLM failed (prompt exceeds the model's context")
    assert result.rca["category"] == "dependency"
    assert result.outcome is not None and result.outcome.overflow


async def test_the_whole_rca_ends_within_its_time_budget():
    with FakeOpenAI([Hang(30), Hang(30)]) as fake:
        result = await rca(fake, timeout_s=1.0)
    assert result.author == "rules"
    assert result.rca["summary"].startswith("LLM failed (no answer within the 1s budget)")
    assert result.outcome is not None and result.outcome.provider_error


async def test_evidence_the_logs_do_not_contain_is_never_shown():
    answer = dict(GOOD, evidence=[*GOOD["evidence"], {"source": "container:web",
                                                      "line": "FATAL disk on fire"}])  # fmt: skip
    with FakeOpenAI([Say(json.dumps(answer))]) as fake:
        result = await rca(fake)
    assert result.author == "m"
    assert result.rca["evidence"] == GOOD["evidence"]
    assert "disk on fire" not in json.dumps(result.rca)
    assert result.rca["summary"].startswith("[1 cited line(s) not found in the logs were dropped]")


async def test_a_category_outside_the_set_is_rejected_and_noted():
    off = json.dumps({"summary": "A logger error: 30002.", "category": "logger error"})
    with FakeOpenAI([Say(off), Say(off)]) as fake:
        result = await rca(fake)
    assert result.author == "rules"
    assert result.rca["summary"].startswith(
        "model answer rejected: category 'logger error' is not one of oom, config"
    )
    assert result.outcome is not None and result.outcome.raw == off


async def test_breaker_opens_on_a_failing_model_shows_in_duties_and_closes_again():
    llm = LlmSettings(breaker_failures=2, breaker_cooldown_s=0.01, context_tokens=4096)
    script = [Fail(500), Fail(502), Say('{"verdict": "alert", "reason": "errors"}')]
    with FakeOpenAI(script) as fake:
        advisor = LlmAdvisor(provider(fake), llm=llm)
        duties = Duties()
        advisor.bind_duties(duties)
        assert await advisor.judge("watch it", ["ERROR x"]) is None
        assert await advisor.judge("watch it", ["ERROR x"]) is None
        view = duties.view("llm")
        assert view.state == "waiting" and "circuit open after 2 failure(s)" in view.detail
        assert "HTTP 502" in view.detail and view.healthy  # shown, never a 503
        advisor.breaker.cooldown_s = 3600.0
        assert await advisor.judge("watch it", ["ERROR x"]) is None  # open: no call made
        assert len(fake.requests) == 2
        advisor.breaker.cooldown_s = 0.0
        assert await advisor.judge("watch it", ["ERROR x"]) == ("alert", "errors")
    assert duties.view("llm").state == "running" and advisor.breaker.state == "closed"
