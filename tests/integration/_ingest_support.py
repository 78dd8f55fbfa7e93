"""Shared parts of the ingest tests: a real `websockets` hub, uvicorn on loopback, stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import uvicorn
from starlette.types import ASGIApp
from websockets.asyncio.server import Request, Response, ServerConnection, serve

T0 = datetime(2026, 1, 2, 3, 0, 0, tzinfo=UTC)
MALFORMED: list[Any] = [
    "not an object",
    {"id": "bad-type", "type": "exploded", "job": "j", "run": "1", "ts": "2026-01-02T03:00:00Z"},
    {"type": "heartbeat", "job": "j", "run": "1", "ts": "2026-01-02T03:00:00Z"},  # no id
    {"id": "bad-ts", "type": "heartbeat", "job": "j", "run": "1", "ts": "noon"},
    {"id": "no-line", "type": "log", "job": "j", "run": "1", "ts": "2026-01-02T03:00:00Z"},
]


@dataclass
class Stream:
    """What a hub sends: valid events, malformed items and re-sent duplicates, in order."""

    items: list[Any]
    valid_ids: list[str]  # unique, in first-seen order
    runs: set[str]
    failed_runs: set[str]
    last_id: str  # of the last valid item sent (maybe a re-sent duplicate)


def make_stream(n_valid: int = 5000, jobs: int = 20, run_len: int = 25, seed: int = 5) -> Stream:
    """n_valid distinct events over `jobs` jobs; every 4th run of a job fails."""
    rng = random.Random(seed)
    items: list[Any] = []
    valid: list[dict[str, Any]] = []
    runs: set[str] = set()
    failed: set[str] = set()
    position = dict.fromkeys(range(jobs), 0)
    for i in range(n_valid):
        j = i % jobs
        pos = position[j]
        position[j] += 1
        run_no, step = divmod(pos, run_len)
        job, run = f"job-{j}", str(run_no)
        kind = "started" if step == 0 else "heartbeat" if step % 2 else "log"
        event: dict[str, Any] = {"id": f"ev-{i}", "type": kind, "job": job, "run": run}
        event["ts"] = (T0 + timedelta(milliseconds=10 * i)).isoformat()
        if kind == "log":
            event["line"] = f"processed batch {step} of run {run}"
        if step == run_len - 1:
            event["type"] = "failed" if run_no % 4 == 3 else "finished"
            event.pop("line", None)
            if event["type"] == "failed":
                event["error"] = "upstream API returned 503"
                failed.add(f"{job}:{run}")
        runs.add(f"{job}:{run}")
        items.append(event)
        valid.append(event)
        if i % 50 == 25:
            items.append(MALFORMED[(i // 50) % len(MALFORMED)])
        if i % 40 == 39:
            items.append(dict(rng.choice(valid)))  # a re-sent duplicate
    last = next(i for i in reversed(items) if isinstance(i, dict) and i.get("id") in ids(valid))
    return Stream(items, [e["id"] for e in valid], runs, failed, last["id"])


def ids(events: list[dict[str, Any]]) -> set[str]:
    return {e["id"] for e in events}


@dataclass
class Hub:
    """A job hub speaking the client-mode protocol on 127.0.0.1 (see ingest_client).

    It checks the bearer token, resumes after `?after=<id>` or a resume hello, replays a few
    items before that point (at-least-once, like real hubs), sends frames of 1..40 items
    (some not even JSON), and drops the connection abruptly after each of `drops` counts
    of items sent (overall). Commands it receives are kept in `commands`.
    """

    stream: Stream
    token: str
    drops: list[int] = field(default_factory=list)
    resume: str = "query"
    replay: int = 25
    url: str = ""
    sent: int = 0
    connections: int = 0
    refused: int = 0
    afters: list[str | None] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    first_index: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(11))

    def __post_init__(self) -> None:
        for index, item in enumerate(self.stream.items):
            if isinstance(item, dict) and "id" in item:
                self.first_index.setdefault(str(item["id"]), index)

    def check_auth(self, _conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused += 1
            return _conn.respond(HTTPStatus.UNAUTHORIZED, "bad token\n")
        return None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        after = parse_qs(urlsplit(ws.request.path if ws.request else "").query).get("after")
        after_id = after[0] if after else None
        if self.resume == "hello":
            hello = json.loads(await ws.recv())
            assert hello["type"] == "resume"
            after_id = hello["after"]
        self.afters.append(after_id)
        reader = asyncio.create_task(self._read_commands(ws))
        try:
            await self._send_from(ws, self._start(after_id))
            await reader  # all sent: stay connected for commands until the client leaves
        finally:
            reader.cancel()

    def _start(self, after_id: str | None) -> int:
        if after_id is None:
            return 0
        return max(0, self.first_index[after_id] + 1 - self.replay)

    async def _send_from(self, ws: ServerConnection, index: int) -> None:
        items = self.stream.items
        while index < len(items):
            size = self.rng.randint(1, 40)
            chunk = items[index : index + size]
            frame = json.dumps(chunk[0] if len(chunk) == 1 else chunk)
            if self.rng.random() < 0.01:
                frame = "{oops"  # garbage frame; its items come again in the next one
            else:
                index += len(chunk)
                self.sent += len(chunk)
            await ws.send(frame)
            if self.drops and self.sent >= self.drops[0]:
                self.drops.pop(0)
                assert ws.transport is not None
                ws.transport.abort()  # no close frame: like a crashed hub or a cut cable
                return

    async def _read_commands(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            async for message in ws:
                self.commands.append(json.loads(message))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        async with serve(
            self.handler, "127.0.0.1", 0, process_request=self.check_auth, max_size=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}/events"
            yield self


@contextlib.asynccontextmanager
async def uvicorn_app(app: ASGIApp, **config: Any) -> AsyncIterator[int]:
    """Serve an ASGI app on 127.0.0.1 (free port) in this event loop; yield the port."""
    settings = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="off", log_config=None, **config
    )
    server = uvicorn.Server(settings)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            task.result() if task.done() else None
            raise AssertionError("uvicorn did not start within 5 s")
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)


async def wait_until(predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll an (async or sync) predicate until true, failing after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        await asyncio.sleep(0.02)
