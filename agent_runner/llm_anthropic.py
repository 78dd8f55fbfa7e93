"""Anthropic's Messages API with tool use, over plain HTTP.

POST {base_url}/v1/messages with `x-api-key` and `anthropic-version: 2023-06-01`. The system
prompt is a top-level field; tools are {name, description, input_schema}; the model's tool
calls are `tool_use` content blocks and their results go back as `tool_result` blocks in the
next user message.
"""

from __future__ import annotations

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
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class Anthropic(HttpChatProvider):
    """A Claude model through the Messages API."""

    def __init__(
        self,
        api_key: str,
        model: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 60.0,
        *,
        max_tokens: int = 2048,
        retry: RetryPolicy | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, api_key, model, timeout_s, max_tokens, retry, client)

    async def chat(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> LlmReply:
        """One Messages API call; tool_use blocks come back as ToolCalls."""
        system, turns = wire_messages(messages)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": turns,
        }
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [_wire_tool(t) for t in tools]
        headers = {
            "content-type": "application/json",
            "x-api-key": self._api_key or "",
            "anthropic-version": API_VERSION,
        }
        data = await self._post("/v1/messages", body, headers)
        return parse_reply(data, self.model)


def _wire_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": tool["name"],
        "description": tool.get("description") or "",
        "input_schema": tool.get("input_schema") or {"type": "object", "properties": {}},
    }


def wire_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, alternating user/assistant turns). Consecutive turns of one role are
    merged: the API wants all tool results for one assistant turn in a single user turn."""
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(m: Message) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
        ]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for call in m.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        )
    return blocks


def parse_reply(data: dict[str, Any], model: str) -> LlmReply:
    """Turn a Messages API response into an LlmReply; ProviderError when it has no content."""
    content = data.get("content")
    if not isinstance(content, list):
        raise ProviderError(f"reply has no content: {str(data.get('error') or data)[:120]}")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(_tool_call(block))
    usage = as_dict(data.get("usage"))
    return LlmReply(
        text="".join(texts),
        tool_calls=calls,
        usage=Usage(
            input_tokens=int_or_zero(usage.get("input_tokens")),
            output_tokens=int_or_zero(usage.get("output_tokens")),
        ),
        model=str(data.get("model") or model),
        stop_reason=data.get("stop_reason"),
    )


def _tool_call(block: dict[str, Any]) -> ToolCall:
    arguments = block.get("input")
    name = block.get("name")
    error = None
    if not isinstance(arguments, dict):
        error, arguments = "tool input must be a JSON object", {}
    if not isinstance(name, str) or not name:
        name, error = "", error or "tool_use block without a name"
    return ToolCall(
        id=str(block.get("id") or f"toolu_{uuid.uuid4().hex[:12]}"),
        name=name,
        arguments=arguments,
        error=error,
    )
