"""What every LLM provider speaks: neutral messages, replies, errors, and retried HTTP POSTs.

Providers talk HTTP directly with httpx (no vendor SDKs): small, and testable against a real
local HTTP server. A provider translates `Message`s to its wire format and its reply back to
an `LlmReply`; `post_json` does the timeouts, retries and backoff for all of them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import httpx

from mcp_server.errors import Unavailable

logger = logging.getLogger(__name__)

#: HTTP statuses worth another try: rate limited, or the server had a bad moment.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})  # 529: Anthropic overloaded
_REASON_CHARS = 200


class ProviderError(Unavailable):
    """The LLM provider could not give an answer (unreachable, refused, timed out, nonsense).

    `reason` is short and safe to show in an RCA ("timeout after 3 tries", "HTTP 401: ...").
    The runner falls back to rules when it sees this.
    """

    def __init__(self, reason: str, *, overflow: bool = False) -> None:
        super().__init__(f"LLM provider: {reason}")
        self.reason = reason
        self.overflow = overflow  # the prompt did not fit the model's context


#: How servers say a prompt is longer than the context (llama.cpp, OpenAI, vLLM, Anthropic).
OVERFLOW_MARKERS = (
    "exceed_context_size", "exceeds the available context", "context_length_exceeded",
    "maximum context length", "context window", "prompt is too long", "input is too large",
)  # fmt: skip


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for. `error` is set when its arguments were not a JSON object:
    such a call is answered with that error and never executed. `raw` keeps the arguments as
    the model sent them, so the conversation can be echoed back faithfully."""

    id: str
    name: str
    arguments: dict[str, Any]
    error: str | None = None
    raw: str | None = None


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class LlmReply:
    """One answer of the model: text, the tool calls it wants, tokens used, model name."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    stop_reason: str | None = None


@dataclass(frozen=True)
class Message:
    """One turn of a conversation, independent of any provider's wire format.

    - system / user: `content`.
    - assistant: `content` (may be empty) and the `tool_calls` it made.
    - tool: the result of the call `tool_call_id` (named `name`); `is_error` for refusals.
    """

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


class LlmProvider(Protocol):
    """A chat model that can call tools. `tools` are dicts: name, description, input_schema."""

    model: str

    async def chat(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]]) -> LlmReply:
        """One model turn. Raises ProviderError when no usable reply could be had."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per request, exponential backoff, Retry-After honoured up to a cap, and a total
    deadline across all tries (no try starts, and no wait lasts, past it)."""

    tries: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    retry_after_cap_s: float = 30.0
    deadline_s: float = 180.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before try `attempt + 1` (attempt counts from 1)."""
        backoff = min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s)
        if retry_after is None:
            return backoff
        return min(max(retry_after, 0.0), self.retry_after_cap_s)


async def post_json(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    timeout_s: float,
    retry: RetryPolicy,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """POST `body` as JSON and return the JSON reply, retrying 429/5xx/timeouts/connect errors.

    Raises ProviderError with a short reason when the tries or the deadline run out, on a
    status that is not worth retrying (400, 401, 404 ...), or when the reply is not JSON.
    """
    deadline = time.monotonic() + retry.deadline_s
    last, attempt = "no try made", 0
    for attempt in range(1, retry.tries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        retry_after: float | None = None
        try:
            response = await _post(client, url, body, headers, min(timeout_s, remaining))
        except httpx.TimeoutException:
            last = f"timeout after {min(timeout_s, remaining):.1f}s"
        except httpx.ConnectError as exc:
            last = f"cannot connect: {type(exc).__name__}"
        except httpx.TransportError as exc:  # e.g. the server died mid-answer
            last = f"connection lost: {type(exc).__name__}"
        except httpx.InvalidURL as exc:
            raise ProviderError(f"invalid base URL: {exc}; check OPSMEDIC_LLM__BASE_URL") from exc
        else:
            if response.status_code < 300:
                return _json_body(response)
            last = f"HTTP {response.status_code}: {_error_text(response)}"
            if is_overflow(response.text):  # retrying the same prompt cannot help
                raise ProviderError(f"prompt exceeds the model's context ({last})", overflow=True)
            if response.status_code not in RETRY_STATUSES:
                raise ProviderError(last)
            retry_after = _retry_after(response.headers.get("retry-after"))
        if attempt < retry.tries:
            wait = retry.delay(attempt, retry_after)
            if time.monotonic() + wait >= deadline:
                break
            logger.info("LLM request failed (%s); try %d in %.2fs", last, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise ProviderError(f"{last} (gave up after {attempt} tries)")


async def _post(
    client: httpx.AsyncClient | None,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout_s: float,
) -> httpx.Response:
    if client is not None:
        return await client.post(url, json=body, headers=headers, timeout=timeout_s)
    async with httpx.AsyncClient(timeout=timeout_s) as own:
        return await own.post(url, json=body, headers=headers)


def is_overflow(body: str) -> bool:
    """True when an error body says the prompt did not fit the model's context."""
    low = body[:4000].lower()
    return any(marker in low for marker in OVERFLOW_MARKERS)


def _json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise ProviderError(f"reply is not JSON: {response.text[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ProviderError("reply is not a JSON object")
    return data


def _error_text(response: httpx.Response) -> str:
    """The provider's own error message, short; never the request (it may carry secrets)."""
    try:
        data = response.json()
    except ValueError:
        return " ".join(response.text.split())[:_REASON_CHARS] or response.reason_phrase
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message") or err.get("type")
    text = str(err) if err else response.reason_phrase
    return " ".join(text.split())[:_REASON_CHARS]


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_arguments(raw: Any) -> tuple[dict[str, Any], str | None]:
    """A tool call's arguments as a dict, or ({}, why not). Accepts a JSON string or a dict
    (some OpenAI-compatible servers, e.g. Ollama, send the object itself)."""
    if isinstance(raw, dict):
        return raw, None
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}, None
    if not isinstance(raw, str):
        return {}, f"arguments must be a JSON object, got {type(raw).__name__}"
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return {}, f"arguments are not valid JSON ({exc.msg} at char {exc.pos})"
    if not isinstance(value, dict):
        return {}, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a dict, else an empty one (wire replies are untrusted shapes)."""
    return value if isinstance(value, dict) else {}


def int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class HttpChatProvider:
    """What both HTTP providers share: endpoint, model, limits, retries, an optional client
    (tests inject one), and a key that never shows up in a repr or a log line."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        max_tokens: int | None,
        retry: RetryPolicy | None,
        client: httpx.AsyncClient | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.retry = retry or RetryPolicy()
        self._api_key = api_key
        self._client = client

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    async def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any]:
        return await post_json(
            f"{self.base_url}{path}", body, headers,
            timeout_s=self.timeout_s, retry=self.retry, client=self._client,
        )  # fmt: skip
