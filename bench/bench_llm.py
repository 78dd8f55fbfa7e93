"""RCA with a real local model beside rules only: latency per incident, and how often the
model's answers are rejected by validation.

Usage: python bench/bench_llm.py [--cases PATH] [--url BASE_URL] [--limit N] [--timeout S]
                                 [--max-tokens N]

Cases: --cases, else $OPSMEDIC_DIAGNOSIS_DIR/rca-dev.jsonl, else ../shared/diagnosis/
rca-dev.jsonl beside the repo (never copied into it). The model: --url (an OpenAI-compatible
server, e.g. http://127.0.0.1:8080/v1), else a llama-server with SmolLM2-135M started here
(`make llm-deps`). Each case's prompt is the server's `rca` template filled with the case's
incident and its log summary; the model answers through the same path the runner uses
(`rca_with_fallback`: context budget, time budget, validation, evidence check). Prints the
latency (median, p95) of the model path beside the rules alone, the share of answers
rejected, and accuracy against the labels. Numbers only; no assertion.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import anyio

from agent_runner.llm_base import RetryPolicy
from agent_runner.llm_guard import context_tokens, prompt_chars
from agent_runner.llm_openai import OpenAiCompatible
from agent_runner.llm_rca import rca_with_fallback
from agent_runner.rules import rca_input, triage
from bench._common import describe
from bench.bench_rca import incident_of
from mcp_server.backends.logsummary import summarize
from mcp_server.safety.redaction import frame_untrusted
from prompts.registry import template
from tests.rca_replay import diagnosis_dir, load_cases


def case_prompt(case: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]], str]:
    """(incident, evidence lines, rca prompt) for one labelled case."""
    incident = {**incident_of(case), "title": f"{case['service'][:80]} stopped"}
    lines = case["log"].splitlines()
    summary = frame_untrusted(summarize(lines).render(), "container:c", max_chars=12_000)
    prompt = template("rca").safe_substitute(
        incident_id=1, target="container:c", incident=str(incident), timeline="(none)",
        evidence=summary, metrics="(not measured)", history="(none)",
    )  # fmt: skip
    return incident, [("container:c", line) for line in lines], prompt


async def no_tools(name: str, args: dict[str, Any]) -> str:
    return "error: no tools in this bench"


async def run(cases: list[dict[str, Any]], url: str, timeout_s: float, max_tokens: int) -> None:
    provider = OpenAiCompatible(url, "bench", "local", timeout_s, max_tokens=max_tokens,
                                retry=RetryPolicy(tries=2, deadline_s=timeout_s))  # fmt: skip
    ctx = await context_tokens(url) or 8192
    budget = prompt_chars(ctx, max_tokens)
    rules_s, model_s = [], []
    outcomes: Counter[str] = Counter()
    right = Counter[str]()
    for case in cases:
        incident, evidence, prompt = case_prompt(case)
        t0 = time.perf_counter()
        rules_rca = rca_input(triage(incident, evidence))
        rules_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = await rca_with_fallback(
            provider, incident, evidence, prompt, no_tools, [], max_steps=2,
            prompt_chars=budget, timeout_s=timeout_s,
        )  # fmt: skip
        model_s.append(time.perf_counter() - t0)
        outcome = result.outcome
        kind = "accepted" if result.fallback_reason is None else "rejected"
        if outcome is not None and outcome.provider_error:
            kind = "no answer (timeout/error)"
        outcomes[kind] += 1
        right["rules"] += rules_rca["category"] == case["category"]
        right["model path"] += result.rca["category"] == case["category"]
        if kind == "accepted":
            right["model, accepted only"] += result.rca["category"] == case["category"]
    n = len(cases)
    print(f"model server {url}: context {ctx} tokens, prompt budget {budget} chars, "
          f"max_tokens {max_tokens}, {n} cases")  # fmt: skip
    print(f"rules only          {describe(rules_s)}")
    print(f"model (with rules)  {describe(model_s)}")
    for kind, count in outcomes.most_common():
        print(f"  {kind:28s} {count:3d}/{n}  ({100 * count / n:.0f}%)")
    accepted = outcomes["accepted"]
    print(f"accuracy: rules {right['rules']}/{n}, model path {right['model path']}/{n}, "
          f"model when accepted {right['model, accepted only']}/{accepted}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", type=Path, default=None)
    ap.add_argument("--url", default=None, help="OpenAI-compatible base URL (…/v1)")
    ap.add_argument("--limit", type=int, default=0, help="first N cases only")
    ap.add_argument("--timeout", type=float, default=30.0, help="budget per RCA, seconds")
    ap.add_argument("--max-tokens", type=int, default=512, help="per answer")
    args = ap.parse_args()
    path = args.cases or diagnosis_dir() / "rca-dev.jsonl"
    if not path.exists():
        print(f"bench_llm: no cases at {path}: pass --cases or set OPSMEDIC_DIAGNOSIS_DIR")
        return 0
    cases = load_cases(path)[: args.limit or None]
    if args.url:
        anyio.run(run, cases, args.url, args.timeout, args.max_tokens)
        return 0
    from tests.llama_support import LlamaServer, binaries

    found = binaries()
    if isinstance(found, str):
        print(f"bench_llm: {found}; or pass --url")
        return 0
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(Path(tmp)) as llama:
        anyio.run(run, cases, llama.base_url, args.timeout, args.max_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
