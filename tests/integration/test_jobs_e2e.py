"""Bot jobs end to end through the real server: a hub over WebSocket, bots pushing to /ingest,
restart commands back to the hub, and two servers sharing one MongoDB-wire store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus
from tests.helpers import http_server, make_settings
from tests.integration._ingest_support import Hub, make_stream

HUB_TOKEN = "hub-token-0123456789"


def _ev(i: str, kind: str, run: str, **extra: Any) -> dict[str, Any]:
    ts = "2026-11-21T06:00:00+00:00"
    return {"id": i, "type": kind, "job": "invoice-bot", "run": run, "ts": ts, **extra}


class RestartingHub:
    """A hub whose job fails once; a restart command makes it run the job again."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        first = [
            _ev("e1", "started", "1", bot="invoices", timeout_s=600),
            _ev("e2", "log", "1", line="ERROR psycopg2.OperationalError: connection refused"),
            _ev("e3", "failed", "1", error="database connection refused"),
        ]
        await ws.send(json.dumps(first))
        async for message in ws:
            command = json.loads(message)
            self.commands.append(command)
            if command.get("command") == "restart":
                again = [_ev("e4", "started", "2"), _ev("e5", "heartbeat", "2")]
                await ws.send(json.dumps(again))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RestartingHub]:
        async with serve(self.handler, "127.0.0.1", 0) as server:
            self.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/hub"
            yield self


async def _until(predicate, timeout=20.0):
    with anyio.fail_after(timeout):
        while not (value := await predicate()):
            await anyio.sleep(0.1)
    return value


async def test_failed_job_restarted_through_the_hub(tmp_path):
    async with RestartingHub().running() as hub:
        settings = make_settings(
            tmp_path, mode="heal", ingest={"url": hub.url},
            policy={"allow": ["job:*"], "verify_timeout_s": 15},
        )  # fmt: skip
        deps = Deps.build(settings)
        await deps.start()
        async with Client(create_server(settings, deps, docker=False)) as c:

            async def incident():
                rows = await deps.store.list_incidents(limit=5)
                return next((i for i in rows if i.target == "job:invoice-bot"), None)

            inc = await _until(incident)
            assert inc.symptom == "run_failed"
            r = await c.call_tool(
                "restart",
                {"target": "job:invoice-bot", "reason": "db back", "incident_id": inc.id},
            )
            jobs = json.loads((await c.read_resource("opsmedic://jobs"))[0].text)
            logs = await c.call_tool("tail_logs", {"source": "job:invoice-bot"})
        assert r.structured_content["ok"] is True, r.structured_content
        assert [cmd["command"] for cmd in hub.commands] == ["restart"]
        assert hub.commands[0]["job"] == "invoice-bot"
        got = await deps.store.get_incident(inc.id)
        assert got is not None and got.status == IncidentStatus.resolved
        assert jobs["jobs"][0]["id"] == "invoice-bot"
        assert "connection refused" in logs.structured_content["lines"]
        await deps.stop()


async def test_bots_push_to_ingest_over_http(tmp_path):
    token = "ingest-token-0123456789"
    with http_server(tmp_path, OPSMEDIC_INGEST__TOKEN=token) as (base, _):
        ws_url = base.replace("http://", "ws://") + "/ingest"
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps([_ev("a1", "started", "7"), _ev("a2", "heartbeat", "7")]))
            ack = json.loads(await ws.recv())
        assert ack["type"] == "ack" and ack["accepted"] == 2
        with pytest.raises(Exception, match="401"):
            async with connect(ws_url, additional_headers={"Authorization": "Bearer no"}):
                pass

        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def listed():  # job state is written behind (<= 0.5 s after the events)
                return "invoice-bot" in (await http.get("/api/jobs")).text

            await _until(listed, timeout=10)
            assert (await http.get("/healthz")).status_code == 200


async def test_two_servers_on_one_mongo_ingest_once(tmp_path, mongo_url):
    stream = make_stream(n_valid=1500, jobs=10, run_len=25)
    store_url = f"{mongo_url}/shared_{uuid.uuid4().hex[:8]}"
    async with Hub(stream, HUB_TOKEN).running() as hub:
        servers, all_deps = [], []
        for i in range(2):
            settings = make_settings(
                tmp_path / f"s{i}", store_url=store_url,
                ingest={"url": hub.url, "hub_token": HUB_TOKEN},
            )  # fmt: skip
            deps = Deps.build(settings)
            await deps.start()
            all_deps.append(deps)
            servers.append(Client(create_server(settings, deps, docker=False)))
        async with servers[0], servers[1]:
            store = all_deps[0].store

            async def all_in():
                return len(await store.events_after(0, 5000)) >= len(stream.valid_ids)

            await _until(all_in, timeout=60)
            await asyncio.sleep(1.0)  # let write-behind job/run state flush
            for deps in all_deps:
                await deps.services.jobs.flush()
        events = [e for e in await store.events_after(0, 10_000) if e.source != "incident"]
        ingest_ids = [e.id for e in events if e.type.startswith("job.")]
        assert sorted(ingest_ids) == sorted(stream.valid_ids)  # each valid event once
        jobs = await store.list_jobs()
        assert len(jobs) == len({j.id for j in jobs}) == 10
        incidents = await store.list_incidents(limit=500)
        keys = [(i.target, i.symptom) for i in incidents if i.status != IncidentStatus.resolved]
        assert len(keys) == len(set(keys))  # no twins across the two servers
        assert hub.connections == 1  # the lease kept the second server off the hub
        for deps in all_deps:
            await deps.stop()
