"""Who writes the RCA: the rules (embedded default) or an LLM that falls back to the rules."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from fastmcp import Client

from agent_runner import rules
from mcp_server.settings import Settings

logger = logging.getLogger(__name__)


class Advisor(Protocol):
    name: str

    async def advise(
        self, incident: dict[str, Any], evidence: list[tuple[str, str]], client: Client[Any]
    ) -> dict[str, Any]:
        """An RCA as the record_rca tool takes it (summary, category, evidence, author...)."""


class RulesAdvisor:
    """Deterministic triage rules: fast, offline, always available."""

    name = "rules"

    async def advise(
        self, incident: dict[str, Any], evidence: list[tuple[str, str]], client: Client[Any]
    ) -> dict[str, Any]:
        return {**rules.rca_input(rules.triage(incident, evidence)), "author": "rules"}


def advisor_from_settings(settings: Settings) -> Advisor:
    """Rules when no LLM is configured (the embedded default), else the LLM with rules fallback."""
    if settings.llm.provider == "none":
        return RulesAdvisor()
    from agent_runner.llm_advisor import LlmAdvisor

    return LlmAdvisor.from_settings(settings)
