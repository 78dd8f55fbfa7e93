"""RCA by an LLM: the server's `rca` prompt plus its read-only tools, rules as the fallback.

The model only advises: it sees read-only tools (writing ones are refused by llm_rca even if
listed), and what it returns is validated, then recorded as an RCA; its raw answer goes to
the audit log, redacted. Policy in the server decides any action.

A real model is slow, small or gone at times, so every call is bounded: `max_tokens` per
answer, `timeout_s` for the whole RCA, the prompt cut to the server's context, at most
`concurrency` RCAs in flight (more get the rules' RCA at once), and a circuit breaker that
stops calling a failing model for a while (shown as the `llm` duty in /healthz).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
from fastmcp import Client

from agent_runner.llm_base import LlmProvider, Message, ProviderError
from agent_runner.llm_guard import (
    DEFAULT_CONTEXT_TOKENS,
    Breaker,
    context_tokens,
    fit_prompt,
    prompt_chars,
)
from agent_runner.llm_rca import RcaResult, extract_json, rca_with_fallback
from agent_runner.providers import provider_from_settings
from mcp_server.core.duties import Duties
from mcp_server.safety.redaction import Redactor, frame_untrusted
from mcp_server.settings import LlmSettings, Settings

logger = logging.getLogger(__name__)

DUTY = "llm"
RAW_AUDIT_CHARS = 2000
PROPS_RETRY_S = 60.0


class LlmAdvisor:
    def __init__(
        self,
        provider: LlmProvider,
        max_steps: int = 6,
        max_tokens: int = 20_000,
        llm: LlmSettings | None = None,
    ):
        self.provider = provider
        self.name = provider.model
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.llm = llm or LlmSettings(timeout_s=getattr(provider, "timeout_s", 60.0))
        self.breaker = Breaker(self.llm.breaker_failures, self.llm.breaker_cooldown_s)
        self._slots = anyio.Semaphore(self.llm.concurrency)
        self._context: int | None = self.llm.context_tokens
        self._props_retry = 0.0
        self._redactor = Redactor()

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmAdvisor:
        provider = provider_from_settings(settings.llm)
        if provider is None:  # pragma: no cover - advisor_from_settings checks "none" first
            raise ValueError("no LLM provider configured")
        return cls(provider, llm=settings.llm)

    def bind_duties(self, duties: Duties) -> None:
        """Show the breaker as the `llm` duty: running when closed, waiting when open."""
        duties.add(DUTY, None)
        duties.beat(DUTY, f"{self.name}: circuit closed")

        def show(state: str, detail: str) -> None:
            if state == "closed":
                duties.beat(DUTY, f"{self.name}: circuit closed ({detail})")
            else:
                duties.set(DUTY, "waiting", f"{self.name}: {detail}")

        self.breaker.listener = show

    async def context(self) -> int:
        """The model's context in tokens: configured, else llama.cpp's /props (asked again
        a minute after a miss: the server may be down just now), else 8192."""
        now = time.monotonic()
        if self._context is None and now >= self._props_retry:
            base = getattr(self.provider, "base_url", "")
            self._context = await context_tokens(base) if base else None
            self._props_retry = now + PROPS_RETRY_S
        return self._context or DEFAULT_CONTEXT_TOKENS

    async def advise(
        self, incident: dict[str, Any], evidence: list[tuple[str, str]], client: Client[Any]
    ) -> dict[str, Any]:
        prompt = await client.get_prompt("rca", {"incident_id": str(incident["id"])})
        text = "\n".join(getattr(m.content, "text", "") for m in prompt.messages)
        tools = [
            {"name": t.name, "description": t.description or "", "input_schema": t.input_schema}
            for t in await client.list_tools()
            if t.annotations is not None and t.annotations.read_only_hint
        ]

        async def call_tool(name: str, args: dict[str, Any]) -> str:
            r = await client.call_tool(name, args, raise_on_error=False)
            body = "\n".join(getattr(c, "text", "") for c in r.content)
            return f"error: {body}" if r.is_error else body

        skip = self._skip_reason()
        if skip is not None:  # the rules answer at once; the note says why
            result = await rca_with_fallback(None, incident, evidence, text, call_tool, tools)
            result.rca["summary"] = f"LLM not asked ({skip}); rules used. {result.rca['summary']}"
            return {**result.rca, "author": "rules"}
        async with self._slots:
            budget = prompt_chars(await self.context(), self.llm.max_tokens, tools)
            result = await rca_with_fallback(
                self.provider, incident, evidence, text, call_tool, tools,
                self.max_steps, self.max_tokens,
                prompt_chars=budget, timeout_s=self.llm.timeout_s,
            )  # fmt: skip
        self._record(result)
        await self._audit(client, incident, result)
        return {**result.rca, "author": result.author}

    def _skip_reason(self) -> str | None:
        if self._slots.value == 0:
            return f"model busy with {self.llm.concurrency} RCA(s)"
        if not self.breaker.allow():
            return self.breaker.why_open()
        return None

    def _record(self, result: RcaResult) -> None:
        outcome = result.outcome
        if outcome is not None and outcome.provider_error and not outcome.overflow:
            self.breaker.failure(outcome.failure or "no answer")
        else:  # it answered (even a rejected answer means the server works)
            self.breaker.success()
        if result.fallback_reason:
            logger.warning("LLM RCA not used (%s); rules used", result.fallback_reason)

    async def _audit(self, client: Client[Any], incident: dict[str, Any], res: RcaResult) -> None:
        """The model's raw answer (redacted, bounded) and whether it was used, in the audit."""
        outcome = res.outcome
        if outcome is None or not (outcome.raw or outcome.failure):
            return
        verdict = "used" if res.fallback_reason is None else f"not used: {res.fallback_reason}"
        raw = self._redactor.redact_text(outcome.raw)[:RAW_AUDIT_CHARS]
        detail = f"{outcome.author} answer ({verdict}); raw: {raw!r}"
        r = await client.call_tool(
            "write_audit_entry", {"event": "llm_rca", "detail": detail,
                                  "incident_id": incident["id"]}, raise_on_error=False,
        )  # fmt: skip
        if r.is_error:
            logger.warning("could not audit the model's answer for incident %s", incident["id"])

    async def judge(self, prompt: str, evidence: list[str]) -> tuple[str, str] | None:
        """The model's verdict (ok / warn / alert) and one-line reason for a monitor's
        evidence, or None when it fails, is busy or is cut off by the breaker (the rules'
        verdict then stands)."""
        if not self.breaker.allow():
            return None
        budget = prompt_chars(await self.context(), self.llm.max_tokens)
        framed = frame_untrusted("\n".join(evidence), "monitor inputs", max_chars=12_000)
        ask = fit_prompt(
            f"{prompt}\n\nJudge the monitor inputs below. Reply with ONE JSON object: "
            '{"verdict": "ok" | "warn" | "alert", "reason": "one line"}\n\n' + framed,
            budget,
        )
        try:
            with anyio.fail_after(self.llm.timeout_s):
                reply = await self.provider.chat([Message(role="user", content=ask)], [])
        except (ProviderError, TimeoutError) as exc:
            if not getattr(exc, "overflow", False):  # a long prompt is not a failing model
                self.breaker.failure(getattr(exc, "reason", "") or "timed out")
            logger.warning("LLM monitor judgement failed (%s); rules verdict stands", exc)
            return None
        self.breaker.success()
        try:
            data = extract_json(reply.text, keys=("verdict",))
        except ValueError as exc:
            logger.warning("LLM monitor judgement rejected (%s); rules verdict stands", exc)
            return None
        verdict = str(data.get("verdict", "")).lower()
        if verdict not in ("ok", "warn", "alert"):
            return None
        return verdict, str(data.get("reason", ""))[:300]
