"""RCA by an LLM: the server's `rca` prompt plus its read-only tools, rules as the fallback.

The model only advises: it sees read-only tools (writing ones are refused by llm_rca even if
listed), and what it returns is recorded as an RCA. Policy in the server decides any action.
"""

from __future__ import annotations

import logging
from typing import Any

from fastmcp import Client

from agent_runner.llm_base import LlmProvider, Message
from agent_runner.llm_rca import extract_json, rca_with_fallback
from agent_runner.providers import provider_from_settings
from mcp_server.safety.redaction import frame_untrusted
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)


class LlmAdvisor:
    def __init__(self, provider: LlmProvider, max_steps: int = 6, max_tokens: int = 20_000):
        self.provider = provider
        self.name = provider.model
        self.max_steps = max_steps
        self.max_tokens = max_tokens

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmAdvisor:
        provider = provider_from_settings(settings.llm)
        if provider is None:  # pragma: no cover - advisor_from_settings checks "none" first
            raise ValueError("no LLM provider configured")
        return cls(provider)

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

        result = await rca_with_fallback(
            self.provider, incident, evidence, text, call_tool, tools,
            self.max_steps, self.max_tokens,
        )  # fmt: skip
        if result.fallback_reason:
            logger.warning("LLM RCA failed (%s); rules used", result.fallback_reason)
        return {**result.rca, "author": result.author}

    async def judge(self, prompt: str, evidence: list[str]) -> tuple[str, str] | None:
        """The model's verdict (ok / warn / alert) and one-line reason for a monitor's
        evidence, or None when it fails (the rules' verdict then stands)."""
        framed = frame_untrusted("\n".join(evidence), "monitor inputs", max_chars=12_000)
        ask = (
            f"{prompt}\n\nJudge the monitor inputs below. Reply with ONE JSON object: "
            '{"verdict": "ok" | "warn" | "alert", "reason": "one line"}\n\n' + framed
        )
        try:
            reply = await self.provider.chat([Message(role="user", content=ask)], [])
            data = extract_json(reply.text, keys=("verdict",))
        except Exception as exc:  # a failing model never stops monitoring
            logger.warning("LLM monitor judgement failed (%s); rules verdict stands", exc)
            return None
        verdict = str(data.get("verdict", "")).lower()
        if verdict not in ("ok", "warn", "alert"):
            return None
        return verdict, str(data.get("reason", ""))[:300]
