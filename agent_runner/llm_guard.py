"""Keeping a real model in bounds: a circuit breaker, the context budget, evidence checks.

Pure pieces (time comes in as an argument or an injected clock) used by the LLM advisor:
- `Breaker`: after `failures` provider failures in a row, stop calling the model for
  `cooldown_s`, then let one trial call through; its state is reported to a listener
  (the `llm` duty in /healthz and on the dashboard).
- `fit_prompt`: shrink a prompt to a character budget, the log summary first.
- `context_tokens`: the server's context size from llama.cpp's `/props`, when it has one.
- `keep_real_evidence`: drop cited lines that the logs do not contain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 8192
#: Characters a token stands for, counted low (logs and JSON tokenize badly) to stay inside.
CHARS_PER_TOKEN = 3
#: Tokens kept free for the chat template, role markers and the server's own overhead.
TEMPLATE_TOKENS = 256
MIN_PROMPT_CHARS = 600
LOG_SECTION = "## Log evidence"
_CUT = "\n…[{n} characters of the log summary left out to fit the model's context]\n"

Listener = Callable[[str, str], None]  # (state "closed" | "open" | "half-open", detail)


@dataclass
class Breaker:
    """Consecutive-failure circuit breaker. `allow()` says whether to call the model now."""

    failures: int = 3
    cooldown_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    listener: Listener | None = None
    state: str = "closed"
    streak: int = 0
    last_error: str = ""
    opened_at: float | None = None
    _trial: bool = field(default=False, repr=False)

    def allow(self) -> bool:
        """True when a call may go out: closed, or open long enough for one trial call."""
        if self.state == "closed":
            return True
        opened = self.opened_at
        if self.state == "open" and opened is not None and self.clock() - opened >= self.cooldown_s:
            self._set("half-open", f"trying the model again after: {self.last_error}")
        if self.state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.streak, self._trial = 0, False
        if self.state != "closed":
            self._set("closed", "the model answers again")

    def failure(self, reason: str) -> None:
        self.streak += 1
        self.last_error = reason
        self._trial = False
        if self.state == "half-open" or self.streak >= self.failures:
            self.opened_at = self.clock()
            self._set("open", self.why_open())

    def why_open(self) -> str:
        wait = 0.0 if self.opened_at is None else self.cooldown_s - (self.clock() - self.opened_at)
        return (
            f"circuit open after {self.streak} failure(s) in a row (last: {self.last_error}); "
            f"rules used, next try in {max(wait, 0.0):.0f}s"
        )

    def _set(self, state: str, detail: str) -> None:
        if state != self.state:
            logger.warning("LLM circuit %s: %s", state, detail)
        self.state = state
        if self.listener is not None:
            self.listener(state, detail)


def prompt_chars(context: int, max_tokens: int, tools: Iterable[dict[str, Any]] = ()) -> int:
    """Characters a prompt may take: the context minus the answer, tools and template."""
    tool_tokens = sum(len(str(t)) for t in tools) // CHARS_PER_TOKEN
    free = context - max_tokens - tool_tokens - TEMPLATE_TOKENS
    return max(MIN_PROMPT_CHARS, free * CHARS_PER_TOKEN)


def fit_prompt(text: str, max_chars: int) -> str:
    """`text` within `max_chars`: the log section loses its tail first (its head has the
    error templates), then the whole prompt is cut, keeping its start and its end (the
    answer format)."""
    if len(text) <= max_chars:
        return text
    start = text.find(LOG_SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(LOG_SECTION))
        end = len(text) if end < 0 else end
        excess = len(text) - max_chars
        body = text[start:end]
        keep = max(len(LOG_SECTION) + 1, len(body) - excess - 80)
        if keep < len(body):
            cut = _CUT.format(n=len(body) - keep)
            text = text[:start] + body[:keep] + cut + text[end:]
    if len(text) <= max_chars:
        return text
    tail = min(len(text) // 3, max_chars // 3)
    marker = "\n…[prompt shortened to fit the model's context]\n"
    head = max(0, max_chars - tail - len(marker))
    return text[:head] + marker + text[len(text) - tail :]


async def context_tokens(base_url: str, timeout_s: float = 5.0) -> int | None:
    """The context size a llama.cpp server reports at `/props` (n_ctx, per slot), or None
    when the server has no such endpoint (OpenAI, Ollama) or does not answer."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{root}/props")
        data = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    gen = data.get("default_generation_settings")
    for value in (gen.get("n_ctx") if isinstance(gen, dict) else None, data.get("n_ctx")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _norm(text: str) -> str:
    return " ".join(text.split())


def keep_real_evidence(rca: dict[str, Any], seen: Iterable[str]) -> tuple[dict[str, Any], int]:
    """(`rca` with only the evidence lines that occur in `seen` texts, number dropped).
    A cited line counts when, whitespace-normalised, it is part of a seen text."""
    corpus = "\n".join(_norm(s) for s in seen)
    kept, dropped = [], 0
    for item in rca.get("evidence") or []:
        line = _norm(str(item.get("line", "")))
        if len(line) >= 4 and line in corpus:
            kept.append(item)
        else:
            dropped += 1
    return {**rca, "evidence": kept}, dropped
