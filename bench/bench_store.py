"""Store throughput: event ingest (batches), audit appends, chain verification.

    .venv/bin/python -m bench.bench_store [--url sqlite:///tmp/bench.db | mongodb://...]
                                           [--events 50000] [--batch 500] [--audit 2000]

Without --url it uses a fresh SQLite file in a temp dir. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from uuid import uuid4

import anyio

from mcp_server.models import AuditDraft, Event
from mcp_server.store.base import open_store


async def bench(url: str, events: int, batch: int, audit: int) -> None:
    store = open_store(url)
    await store.open()
    try:
        run = uuid4().hex[:6]
        chunks = [
            [
                Event(id=f"{run}-{i}", source="bench", type="tick", data={"i": i})
                for i in range(first, min(first + batch, events))
            ]
            for first in range(0, events, batch)
        ]
        started = time.perf_counter()
        inserted = 0
        for chunk in chunks:
            inserted += len(await store.add_events(chunk))
        took = time.perf_counter() - started
        print(f"add_events: {inserted} in {took:.2f} s = {inserted / took:,.0f} events/s")

        started = time.perf_counter()
        again = await store.add_events(
            [Event(id=f"{run}-{i}", source="b", type="t") for i in range(batch)]
        )
        took = time.perf_counter() - started
        print(f"duplicate batch of {batch}: {len(again)} inserted in {took:.3f} s")

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(audit):
                draft = AuditDraft(
                    actor="bench", transport="b", tool="t", outcome="ok", args={"n": n}
                )
                tg.start_soon(store.append_audit, draft)
        took = time.perf_counter() - started
        print(f"append_audit (concurrent): {audit} in {took:.2f} s = {audit / took:,.0f}/s")

        started = time.perf_counter()
        verdict = await store.verify_audit()
        took = time.perf_counter() - started
        print(f"verify_audit: {verdict.checked} entries ok={verdict.ok} in {took:.2f} s")
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--audit", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/bench.db"
        anyio.run(bench, url, args.events, args.batch, args.audit)


if __name__ == "__main__":
    main()
