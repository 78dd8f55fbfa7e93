"""LLM providers for root-cause analysis: pick one from settings.

`provider_from_settings(settings.llm)` gives None for provider "none" (rules only, the
embedded default), an `OpenAiCompatible` for "openai" (OpenAI, Groq, Ollama, vLLM, llama.cpp
server: set OPSMEDIC_LLM__BASE_URL), or an `Anthropic` for "anthropic".
"""

from __future__ import annotations

from agent_runner.llm_anthropic import DEFAULT_BASE_URL as ANTHROPIC_URL
from agent_runner.llm_anthropic import Anthropic
from agent_runner.llm_base import (
    LlmProvider,
    LlmReply,
    Message,
    ProviderError,
    RetryPolicy,
    ToolCall,
    Usage,
)
from agent_runner.llm_openai import DEFAULT_BASE_URL as OPENAI_URL
from agent_runner.llm_openai import OpenAiCompatible
from mcp_server.errors import ConfigError
from mcp_server.settings import LlmSettings

__all__ = [
    "Anthropic",
    "LlmProvider",
    "LlmReply",
    "Message",
    "OpenAiCompatible",
    "ProviderError",
    "RetryPolicy",
    "ToolCall",
    "Usage",
    "provider_from_settings",
]


def provider_from_settings(
    llm: LlmSettings, retry: RetryPolicy | None = None
) -> LlmProvider | None:
    """The configured provider, or None when LLM RCA is off (provider "none").

    Raises ConfigError naming the missing key: a model is always needed, and Anthropic
    needs an API key (OpenAI-compatible local servers such as Ollama work without one).
    """
    if llm.provider == "none":
        return None
    if not llm.model:
        raise ConfigError(
            f"llm.provider is {llm.provider!r} but no model is set: set OPSMEDIC_LLM__MODEL "
            "(e.g. gpt-4o-mini, llama3.1, claude-sonnet-4-5) or OPSMEDIC_LLM__PROVIDER=none"
        )
    key = llm.api_key.get_secret_value() if llm.api_key else None
    # no try outlives the whole call's budget (the advisor also bounds the whole RCA)
    retry = retry or RetryPolicy(deadline_s=llm.timeout_s)
    if llm.provider == "anthropic":
        if not key:
            raise ConfigError(
                "llm.provider is 'anthropic' but no API key is set: set OPSMEDIC_LLM__API_KEY"
            )
        return Anthropic(
            key, llm.model, base_url=llm.base_url or ANTHROPIC_URL, timeout_s=llm.timeout_s,
            max_tokens=llm.max_tokens, retry=retry,
        )  # fmt: skip
    return OpenAiCompatible(
        llm.base_url or OPENAI_URL, key, llm.model, llm.timeout_s,
        max_tokens=llm.max_tokens, retry=retry,
    )  # fmt: skip
