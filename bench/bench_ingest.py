"""Events per second ingested over a real WebSocket, beside a raw insert loop into the same store.

For each store (SQLite file; MongoDB-wire server: OPSMEDIC_TEST_MONGO_URL or a SecantusDB
started here) in one run:
  raw        store.add_events in batches of 500 of ready-made Events (no socket, no parsing)
  tracker    JobTracker.ingest of ready-parsed events (events + jobs/runs + detection, no socket)
  websocket  a bot in a separate process pushes frames (JSON arrays of --frame events) to the
             /ingest endpoint under uvicorn on 127.0.0.1 and waits for every ack (acks are
             sent after the events are stored). Timed in the bot, first send to last ack.
The event mix is bot-like: --jobs jobs, runs of --run-len events (started, heartbeats, log
lines, finished; every 10th run fails, opening an incident). Numbers are printed, never
asserted. Aim: >= 20,000 events/s into SQLite and >= 50 % of the raw rate.

    .venv/bin/python bench/bench_ingest.py [--events 100000] [--frame 500] [--stores sqlite,mongo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import _common  # noqa: F401  (puts the repo on sys.path)

TOKEN = "bench-ingest-token-0123"
T0 = datetime(2026, 1, 2, tzinfo=UTC)


def bot_events(n: int, jobs: int, run_len: int, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        j = i % jobs
        run_no, step = divmod(i // jobs, run_len)
        ev: dict[str, Any] = {"id": f"{prefix}{i}", "job": f"job-{j}", "run": str(run_no)}
        ev["ts"] = (T0 + timedelta(milliseconds=i)).isoformat()
        if step == 0:
            ev.update(type="started", bot=f"worker-{j % 7}", timeout_s=600)
        elif step == run_len - 1 and run_no % 10 == 9:
            ev.update(type="failed", error="upstream API returned 503")
        elif step == run_len - 1:
            ev["type"] = "finished"
        elif step % 3 == 0:
            ev["type"] = "heartbeat"
        else:
            ev.update(type="log", line=f"processed page {step} of run {run_no}", level="info")
        out.append(ev)
    return out


# --- the bot (separate process) ---------------------------------------------------------------


async def _push(url: str, frames: list[str], window: int) -> dict[str, Any]:
    """Send frames keeping at most `window` unacknowledged (as a well-behaved bot does)."""
    from websockets.asyncio.client import connect

    accepted = 0
    room = asyncio.Semaphore(window)
    async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        started = time.perf_counter()

        async def send() -> None:
            for frame in frames:
                await room.acquire()
                await ws.send(frame)

        sender = asyncio.create_task(send())
        for _ in frames:
            reply = json.loads(await ws.recv())
            if reply.get("type") != "ack":
                raise SystemExit(f"bot got {reply}")
            accepted += reply["accepted"]
            room.release()
        took = time.perf_counter() - started
        await sender
    return {"seconds": took, "accepted": accepted}


def bot_main(url: str, n: int, jobs: int, run_len: int, frame: int, prefix: str) -> None:
    events = bot_events(n, jobs, run_len, prefix)
    frames = [json.dumps(events[i : i + frame]) for i in range(0, n, frame)]
    print(json.dumps(asyncio.run(_push(url, frames, window=16))), flush=True)


# --- the server side ---------------------------------------------------------------------------


@contextlib.contextmanager
def mongo_base() -> Iterator[str]:
    url = os.environ.get("OPSMEDIC_TEST_MONGO_URL")
    if url:
        yield url
        return
    from tests.services import MongoWire

    server = MongoWire()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[int]:
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


def rate(n: int, seconds: float) -> str:
    return f"{n:>7} events in {seconds:6.2f} s = {n / seconds:>9,.0f} events/s"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[Any]:
    from mcp_server.store.base import open_store

    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def tracker_for(store: Any) -> Any:
    from mcp_server.core.events import EventBus
    from mcp_server.core.incidents import Incidents
    from mcp_server.core.jobs import JobTracker

    bus = EventBus(store)
    return JobTracker(store, bus, Incidents(store, bus))


async def phase_raw(store: Any, args: argparse.Namespace) -> float:
    from mcp_server.backends.ingest.build import parse_event
    from mcp_server.core.jobs import to_event

    parsed = [parse_event(e) for e in bot_events(args.events, args.jobs, args.run_len, "raw-")]
    raw = [to_event(e, "bench") for e in parsed]  # type: ignore[arg-type]
    started = time.perf_counter()
    for i in range(0, len(raw), 500):
        await store.add_events(raw[i : i + 500])
    return time.perf_counter() - started


async def phase_tracker(store: Any, args: argparse.Namespace) -> float:
    from mcp_server.backends.ingest.build import parse_event

    tracker = tracker_for(store)
    parsed = [parse_event(e) for e in bot_events(args.events, args.jobs, args.run_len, "trk-")]
    started = time.perf_counter()
    for i in range(0, len(parsed), 500):
        await tracker.ingest(parsed[i : i + 500])
    await tracker.close()
    return time.perf_counter() - started


async def phase_websocket(store: Any, args: argparse.Namespace) -> float:
    from starlette.applications import Starlette

    from mcp_server.backends.ingest.build import ingest_route

    tracker = tracker_for(store)
    route = ingest_route(tracker.handle, token=TOKEN, max_frame_bytes=16 << 20, rate_per_s=1e9)
    async with serve(Starlette(routes=[route])) as port:
        bot = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--bot", f"ws://127.0.0.1:{port}/ingest",
            str(args.events), str(args.jobs), str(args.run_len), str(args.frame), "ws-",
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await bot.communicate()
    await tracker.close()
    if bot.returncode != 0:
        raise SystemExit(f"the bot failed (exit {bot.returncode}); see its output above")
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["accepted"] != args.events or tracker.counts["new"] != args.events:
        raise SystemExit(f"stored {tracker.counts['new']} of {args.events} events")
    return float(result["seconds"])


Phase = Callable[[Any, argparse.Namespace], Awaitable[float]]
PHASES: list[tuple[str, Phase]] = [
    ("raw add_events", phase_raw),
    ("tracker, no socket", phase_tracker),
    ("websocket ingest", phase_websocket),
]


async def bench_store(
    fresh_url: Callable[[str], AbstractContextManager[str]], args: argparse.Namespace
) -> None:
    """Each phase gets a fresh, empty store (a new file, or a new MongoDB-wire server)."""
    raw_s = 0.0
    for name, phase in PHASES:
        with fresh_url(name) as url:
            async with opened(url) as store:
                took = await phase(store, args)
        raw_s = raw_s or took
        share = "" if took == raw_s else f"  ({raw_s / took:.0%} of raw)"
        print(f"  {name:<19}{rate(args.events, took)}{share}", flush=True)


@contextlib.contextmanager
def sqlite_file(tmp: str, name: str) -> Iterator[str]:
    yield f"sqlite:///{tmp}/{name.split()[0]}.db"


@contextlib.contextmanager
def mongo_database(name: str) -> Iterator[str]:
    """A database on a server of its own: SecantusDB slows down as it ages, which would
    favour whichever phase ran first. With OPSMEDIC_TEST_MONGO_URL all share that server."""
    import pymongo

    db = f"bench_ingest_{uuid4().hex[:6]}"
    with mongo_base() as base:
        try:
            yield f"{base}/{db}"
        finally:
            client: Any = pymongo.MongoClient(base)
            with client:
                client.drop_database(db)


async def run(args: argparse.Namespace) -> None:
    print(f"{args.events} events, frames of {args.frame}, {args.jobs} jobs, runs of "
          f"{args.run_len} events (every 10th run fails)")  # fmt: skip
    stores = args.stores.split(",")
    if "sqlite" in stores:
        with tempfile.TemporaryDirectory() as tmp:
            print("SQLite (file, WAL, a new file per phase)")
            await bench_store(lambda name: sqlite_file(tmp, name), args)
    if "mongo" in stores:
        shared = os.environ.get("OPSMEDIC_TEST_MONGO_URL")
        where = f"the server at {shared}" if shared else "a new SecantusDB server per phase"
        print(f"MongoDB wire ({where})")
        await bench_store(mongo_database, args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bot":
        url, n, jobs, run_len, frame, prefix = sys.argv[2:8]
        bot_main(url, int(n), int(jobs), int(run_len), int(frame), prefix)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--frame", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--run-len", type=int, default=100)
    parser.add_argument("--stores", default="sqlite,mongo")
    logging.basicConfig(level=logging.ERROR)  # incidents opened by failed runs log warnings
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
