"""Scripted fake LLM servers: real HTTP on 127.0.0.1, speaking OpenAI's chat completions and
Anthropic's messages protocols, replaying a script and recording every request.

    with FakeOpenAI([Call("tail_logs", {"source": "container:web"}), Say('{"summary": ...}')]) as f:
        provider = OpenAiCompatible(f.base_url, "test-key", "fake-gpt")
        ...
        assert "UNTRUSTED-DATA" in f.requests[1].body["messages"][-1]["content"]

Script steps, one per HTTP request, in order:
- `Say(text)`: a plain assistant answer.
- `Call(name, arguments)`: one tool call; `arguments` may be a str to send malformed JSON.
  A list of Calls is one reply with several tool calls.
- `Fail(status, headers)`: an HTTP error in the protocol's error format (500, 429 ...).
- `Hang(seconds)`: answer nothing for that long (the client should time out), then 504.
When the script runs out, the server answers 500 "script exhausted" (and tests can see it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Fail:
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "scripted failure"


@dataclass(frozen=True)
class Hang:
    seconds: float


Step = Say | Call | list[Call] | Fail | Hang


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def text(self) -> str:
        """The whole body as text, for 'was X sent to the model' assertions."""
        return json.dumps(self.body)


class _FakeLlm:
    """A real uvicorn server in a background thread; subclasses speak one protocol."""

    route = "/"
    prefix = ""

    def __init__(self, script: Sequence[Step], usage: tuple[int, int] = (50, 10)) -> None:
        self.script: list[Step] = list(script)
        self.usage = usage
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def remaining(self) -> int:
        return len(self.script)

    def __enter__(self) -> _FakeLlm:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        app = Starlette(routes=[Route(self.route, self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake LLM server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def _handle(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = {"_invalid_json": True}
        with self._lock:
            self.requests.append(Recorded(request.url.path, dict(request.headers), body))
            step = self.script.pop(0) if self.script else None
        if step is None:
            return self.error(500, "script exhausted")
        if isinstance(step, Fail):
            return self.error(step.status, step.message, step.headers)
        if isinstance(step, Hang):
            deadline = time.monotonic() + step.seconds
            while time.monotonic() < deadline and not self._stopping.is_set():
                await asyncio.sleep(0.02)
            return self.error(504, "hung on purpose")
        model = str(body.get("model") or "fake-model")
        calls = [step] if isinstance(step, Call) else step if isinstance(step, list) else []
        text = step.text if isinstance(step, Say) else ""
        return JSONResponse(self.reply(model, text, calls, next(self._ids)))

    def reply(self, model: str, text: str, calls: list[Call], n: int) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError


class FakeOpenAI(_FakeLlm):
    """Speaks POST /v1/chat/completions; `base_url` ends in /v1 like OpenAI's."""

    route = "/v1/chat/completions"
    prefix = "/v1"

    def reply(self, model: str, text: str, calls: list[Call], n: int) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = [
                {
                    "id": c.id or f"call_{n}_{i}",
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": c.arguments
                        if isinstance(c.arguments, str)
                        else json.dumps(c.arguments),
                    },
                }
                for i, c in enumerate(calls)
            ]
        prompt, completion = self.usage
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"message": message, "type": "server_error", "code": None}}
        return JSONResponse(body, status_code=status, headers=headers)


class FakeAnthropic(_FakeLlm):
    """Speaks POST /v1/messages; `base_url` is the host root like https://api.anthropic.com."""

    route = "/v1/messages"

    def reply(self, model: str, text: str, calls: list[Call], n: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        for i, c in enumerate(calls):
            content.append(
                {"type": "tool_use", "id": c.id or f"toolu_{n}_{i}", "name": c.name,
                 "input": c.arguments}
            )  # fmt: skip
        prompt, completion = self.usage
        return {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if calls else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        kind = "rate_limit_error" if status == 429 else "api_error"
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)
