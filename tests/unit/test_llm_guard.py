"""Pure pieces of the bounded LLM path: breaker, prompt budget, evidence and answer checks."""

from __future__ import annotations

import json

from agent_runner.llm_base import is_overflow
from agent_runner.llm_guard import Breaker, fit_prompt, keep_real_evidence, prompt_chars
from agent_runner.llm_rca import parse_rca


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_then_lets_one_trial_through():
    clock, seen = Clock(), []
    b = Breaker(failures=2, cooldown_s=10, clock=clock, listener=lambda s, d: seen.append(s))
    b.failure("timeout")
    assert b.allow() and b.state == "closed"
    b.failure("cannot connect")
    assert b.state == "open" and not b.allow()
    assert "cannot connect" in b.why_open() and "next try in 10s" in b.why_open()
    clock.now = 10.0
    assert b.allow() and b.state == "half-open"
    assert not b.allow()  # one trial at a time
    b.failure("cannot connect")  # the trial failed: open again for a full cooldown
    assert b.state == "open" and not b.allow()
    clock.now = 20.0
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.streak == 0
    assert seen == ["open", "half-open", "open", "half-open", "closed"]


def test_a_success_resets_the_streak():
    b = Breaker(failures=2, cooldown_s=10, clock=Clock())
    b.failure("x")
    b.success()
    b.failure("y")
    assert b.state == "closed"


PROMPT = (
    "intro\n## Incident\nweb died\n## Log evidence\n"
    + "\n".join(f"ERROR line {i} " + "x" * 40 for i in range(200))
    + "\n## Your answer\nReply with ONE JSON object"
)


def test_fit_prompt_shrinks_the_log_section_first_and_keeps_the_answer_format():
    out = fit_prompt(PROMPT, 2000)
    assert len(out) <= 2000
    assert out.startswith("intro\n## Incident\nweb died") and out.endswith("ONE JSON object")
    assert "ERROR line 0 " in out and "ERROR line 199" not in out
    assert "left out to fit the model's context" in out
    assert fit_prompt(PROMPT, len(PROMPT)) == PROMPT


def test_fit_prompt_cuts_everything_when_the_logs_alone_are_not_enough():
    text = "head " * 2000 + "\n## Your answer\nJSON please"
    out = fit_prompt(text, 1000)
    assert len(out) <= 1000 and out.endswith("JSON please") and "prompt shortened" in out


def test_prompt_budget_leaves_room_for_the_answer_and_the_tools():
    tools = [{"name": "tail_logs", "description": "d" * 3000}]
    assert prompt_chars(4096, 512) > prompt_chars(4096, 512, tools) > prompt_chars(2048, 512)
    assert prompt_chars(256, 512) == 600  # never below a usable minimum


def test_only_evidence_that_occurs_in_the_logs_is_kept():
    rca = {"evidence": [{"source": "c", "line": "  Connection   refused "},
                        {"source": "c", "line": "made up by the model"},
                        {"source": "c", "line": ""}]}  # fmt: skip
    kept, dropped = keep_real_evidence(rca, ["ERROR db: Connection refused (5432)"])
    assert kept["evidence"] == [{"source": "c", "line": "  Connection   refused "}]
    assert dropped == 2


def test_an_unknown_category_is_rejected_with_the_allowed_list():
    answer = json.dumps({"summary": "A logger error: 30002.", "category": "logger error"})
    rca, error = parse_rca(answer)
    assert rca is None
    assert error.startswith("category 'logger error' is not one of oom, config, dependency")


def test_out_of_range_confidence_is_rejected():
    answer = json.dumps({"summary": "db down", "category": "dependency", "confidence": 7})
    rca, error = parse_rca(answer)
    assert rca is None and "confidence" in error


def test_context_overflow_bodies_are_recognised():
    llama = {"error": {"code": 400, "type": "exceed_context_size_error",
                       "message": "the request exceeds the available context size"}}  # fmt: skip
    assert is_overflow(json.dumps(llama))
    assert is_overflow("This model's maximum context length is 8192 tokens")
    assert not is_overflow('{"error": {"message": "invalid api key"}}')
