"""Server mode: the /ingest endpoint in a real Starlette app under uvicorn on 127.0.0.1.

Bad token, bad Origin, oversized frames, floods and garbage are refused or closed with the
right code, and the server stays healthy for the next good client. Also the restart webhook.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from websockets.asyncio.client import ClientConnection, connect

from mcp_server.backends.ingest.build import (
    IngestBatch,
    WebhookRestarter,
    build_ingest_route,
    build_restarter,
    ingest_route,
)
from mcp_server.core.events import EventBus
from mcp_server.core.incidents import Incidents
from mcp_server.core.jobs import JobTracker
from mcp_server.errors import Refused, Unavailable
from mcp_server.settings import IngestSettings
from mcp_server.store.sqlite import SqliteStore
from tests.integration._ingest_support import make_stream, uvicorn_app

TOKEN = "ingest-token-abcdef123"
ORIGIN = "https://ops.example"


async def _failing(_batch: IngestBatch) -> None:
    raise RuntimeError("store is down")


@dataclass
class Server:
    url: str
    http: str
    store: SqliteStore
    tracker: JobTracker


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    store = SqliteStore(f"sqlite:///{tmp_path}/db.sqlite")
    await store.open()
    bus = EventBus(store)
    tracker = JobTracker(store, bus, Incidents(store, bus))
    settings = IngestSettings(
        token=SecretStr(TOKEN),
        allowed_origins=[ORIGIN],
        max_frame_bytes=32_768,
        rate_per_s=100_000,
    )
    route = build_ingest_route(settings, tracker.handle)
    assert route is not None
    slow = ingest_route(tracker.handle, token=TOKEN, path="/ingest-slow", rate_per_s=50)
    broken = ingest_route(_failing, token=TOKEN, path="/ingest-broken")

    async def healthz(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[route, slow, broken, Route("/healthz", healthz)])
    try:
        async with uvicorn_app(app) as port:
            yield Server(f"ws://127.0.0.1:{port}", f"http://127.0.0.1:{port}", store, tracker)
    finally:
        await tracker.close()
        await store.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def exchange(ws: ClientConnection, payload: Any) -> dict[str, Any]:
    await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
    return json.loads(await ws.recv())


async def assert_healthy(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.get(server.http + "/healthz")).text == "ok"
    async with connect(server.url + "/ingest", additional_headers=auth()) as ws:
        event = {"id": f"probe-{id(ws)}", "type": "heartbeat", "job": "probe", "run": "1"}
        reply = await exchange(ws, {**event, "ts": "2026-01-02T03:04:05Z"})
        assert reply["type"] == "ack" and reply["accepted"] == 1


EVENT = {"id": "a1", "type": "started", "job": "etl", "run": "1", "ts": "2026-01-02T03:04:05Z"}


@pytest.mark.parametrize(
    ("headers", "path", "status"),
    [
        ({}, "/ingest", 401),
        (auth("wrong-token"), "/ingest", 401),
        ({"Authorization": "Basic " + TOKEN}, "/ingest", 401),
        ({}, "/ingest?token=nope", 401),
        ({**auth(), "Origin": "https://evil.example"}, "/ingest", 403),
    ],
    ids=["no-token", "wrong-token", "not-bearer", "wrong-query-token", "bad-origin"],
)
async def test_refused_before_the_socket_opens(
    server: Server, headers: dict[str, str], path: str, status: int
) -> None:
    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
        async with connect(server.url + path, additional_headers=headers):
            pass
    assert caught.value.response.status_code == status
    if status == 401:
        assert "Bearer" in caught.value.response.headers.get("WWW-Authenticate", "")
    await assert_healthy(server)


async def test_token_in_query_and_allowed_origin_work(server: Server) -> None:
    async with connect(server.url + f"/ingest?token={TOKEN}", origin=ORIGIN) as ws:  # type: ignore[arg-type]
        reply = await exchange(ws, EVENT)
    assert reply == {"type": "ack", "accepted": 1, "rejected": [], "last_id": "a1"}
    await server.tracker.flush()
    job = await server.store.get_job("etl")
    assert job is not None and job.status == "running"


async def test_oversized_frame_closes_with_1009(server: Server) -> None:
    async with connect(server.url + "/ingest", additional_headers=auth()) as ws:
        await ws.send(json.dumps([EVENT] * 1000))  # ~90 kB > 32 kB
        with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
            await ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
    assert await server.store.events_after(0, 10) == []
    await assert_healthy(server)


async def test_malformed_input_is_rejected_and_the_connection_stays(server: Server) -> None:
    async with connect(server.url + "/ingest", additional_headers=auth()) as ws:
        garbage = await exchange(ws, "{not json")
        assert garbage["accepted"] == 0 and "not valid JSON" in garbage["rejected"][0]["reason"]
        mixed = await exchange(ws, [EVENT, {**EVENT, "id": "a2", "ts": "soon"}, 7, EVENT])
        assert mixed["accepted"] == 2  # the duplicate counts as accepted (already stored)
        assert [(r["index"], r["id"]) for r in mixed["rejected"]] == [(1, "a2"), (2, None)]
        again = await exchange(ws, {**EVENT, "id": "a3", "type": "finished"})
        assert again["accepted"] == 1 and again["last_id"] == "a3"
    assert server.tracker.rejected_total == 3
    assert [e.id for e in await server.store.events_after(0, 10)] == ["a1", "a3"]


async def test_rate_limit_drops_excess_and_says_so(server: Server) -> None:
    events = [{**EVENT, "id": f"r{i}", "type": "heartbeat"} for i in range(80)]
    async with connect(server.url + "/ingest-slow", additional_headers=auth()) as ws:
        error = await exchange(ws, events)
        ack = json.loads(await ws.recv())
    assert error["type"] == "error" and error["reason"] == "rate limited"
    assert error["dropped"] == 30 and error["dropped_ids"][0] == "r50"
    assert ack["accepted"] == 50 and ack["last_id"] == "r49"
    assert len(await server.store.events_after(0, 100)) == 50
    await assert_healthy(server)


async def test_store_failure_closes_with_1011(server: Server) -> None:
    async with connect(server.url + "/ingest-broken", additional_headers=auth()) as ws:
        error = await exchange(ws, EVENT)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as caught:
            await ws.recv()
    assert error["type"] == "error" and "resend" in error["reason"]
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    await assert_healthy(server)


async def test_thousands_pushed_by_concurrent_bots_are_stored_once(server: Server) -> None:
    stream = make_stream(n_valid=3000)
    frames = [stream.items[i : i + 100] for i in range(0, len(stream.items), 100)]

    async def bot(part: list[list[Any]]) -> int:
        accepted = 0
        async with connect(server.url + "/ingest", additional_headers=auth()) as ws:
            for frame in part:
                await ws.send(json.dumps(frame))
            for _ in part:
                accepted += json.loads(await ws.recv())["accepted"]
        return accepted

    # two bots send the same first half (duplicates across connections), then the rest
    half = len(frames) // 2
    counts = await asyncio.gather(bot(frames[:half]), bot(frames[:half]), bot(frames[half:]))
    assert sum(counts) > len(stream.valid_ids)
    ids = [e.id for e in await server.store.events_after(0, 10_000) if e.source == "ingest"]
    assert len(ids) == len(set(ids)) == len(stream.valid_ids)
    await server.tracker.flush()
    runs = await server.store.list_runs(limit=10_000)
    assert {r.id for r in runs} == stream.runs


def test_no_route_without_a_token() -> None:
    assert build_ingest_route(IngestSettings(), lambda b: None) is None  # type: ignore[arg-type,return-value]


# --- the restart webhook ---------------------------------------------------------------------


async def test_webhook_restarter_posts_the_command() -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: Request) -> JSONResponse:
        received.append((request.headers.get("authorization"), await request.json()))
        status = 401 if request.headers.get("authorization") != "Bearer hook-secret" else 202
        return JSONResponse({"ok": status == 202}, status_code=status)

    app = Starlette(routes=[Route("/restart", hook, methods=["POST"])])
    async with uvicorn_app(app) as port:
        url = f"http://127.0.0.1:{port}/restart"
        settings = IngestSettings(webhook_url=url, webhook_token="hook-secret")  # type: ignore[arg-type]
        restarter = build_restarter(settings, hub=None)
        assert isinstance(restarter, WebhookRestarter)
        command_id = await restarter.restart("invoice-bot", "stalled for 10 min")
        with pytest.raises(Refused, match="WEBHOOK_TOKEN"):
            await WebhookRestarter(url, "wrong").restart("invoice-bot", "x")
    assert received[0] == (
        "Bearer hook-secret",
        {
            "type": "command",
            "command": "restart",
            "job": "invoice-bot",
            "reason": "stalled for 10 min",
            "id": command_id,
        },
    )
    with pytest.raises(Unavailable, match="retry later"):
        await WebhookRestarter(url, timeout_s=2).restart("invoice-bot", "server is gone")
