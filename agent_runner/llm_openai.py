"""OpenAI-compatible chat completions with tool calling, over plain HTTP.

Works with OpenAI, Groq, Ollama (`http://host:11434/v1`), vLLM and the llama.cpp server:
POST {base_url}/chat/completions with tools in the OpenAI function format.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import httpx

from agent_runner.llm_base import (
    HttpChatProvider,
    LlmReply,
    Message,
    ProviderError,
    RetryPolicy,
    ToolCall,
    Usage,
    as_dict,
    int_or_zero,
    parse_arguments,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAiCompatible(HttpChatProvider):
    """An OpenAI-compatible chat model. `api_key` may be None for local servers (Ollama)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float = 60.0,
        *,
        max_tokens: int | None = 2048,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, model, timeout_s, max_tokens, retry, client)

    async def chat(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> LlmReply:
        """One chat completion; tool calls come back parsed (bad arguments marked, not raised)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [_wire_message(m) for m in messages],
        }
        if tools:
            body["tools"] = [_wire_tool(t) for t in tools]
            body["tool_choice"] = "auto"
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        headers = {"content-type": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        data = await self._post("/chat/completions", body, headers)
        return parse_reply(data, self.model)


def _wire_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool.get("description") or "",
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        },
    }


def _wire_message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": c.raw if c.raw is not None else json.dumps(c.arguments),
                    },
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}


def parse_reply(data: dict[str, Any], model: str) -> LlmReply:
    """Turn a chat completion response into an LlmReply; ProviderError when it has no choice."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ProviderError(f"reply has no choices: {str(data.get('error') or data)[:120]}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ProviderError("reply's first choice has no message")
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    calls = [_tool_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    usage = as_dict(data.get("usage"))
    return LlmReply(
        text=text,
        tool_calls=calls,
        usage=Usage(
            input_tokens=int_or_zero(usage.get("prompt_tokens")),
            output_tokens=int_or_zero(usage.get("completion_tokens")),
        ),
        model=str(data.get("model") or model),
        stop_reason=choices[0].get("finish_reason"),
    )


def _tool_call(raw: dict[str, Any]) -> ToolCall:
    function = as_dict(raw.get("function"))
    arguments, error = parse_arguments(function.get("arguments"))
    name = function.get("name")
    if not isinstance(name, str) or not name:
        name, error = "", error or "tool call without a function name"
    raw_args = function.get("arguments")
    return ToolCall(
        id=str(raw.get("id") or f"call_{uuid.uuid4().hex[:12]}"),
        name=name,
        arguments=arguments,
        error=error,
        raw=raw_args if isinstance(raw_args, str) else None,
    )
