"""A separate OS process that hammers a store; used by the multi-process and crash tests.

    python -m tests.store._worker URL MODE COUNT CONCURRENCY READY_FILE GO_FILE

Opens the store, creates READY_FILE, waits for GO_FILE to exist (so several workers start
together), then runs COUNT operations with CONCURRENCY coroutines and prints a JSON summary.
MODE: `audit` (append_audit) or `incident` (open_incident for one target+symptom).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import anyio

from mcp_server.models import AuditDraft
from mcp_server.store.base import Store, open_store

GO_TIMEOUT_S = 60.0


async def _audit(store: Store, index: int) -> None:
    await store.append_audit(
        AuditDraft(actor=f"worker-{index}", transport=f"pid-{os.getpid()}", tool="t", outcome="ok")
    )


async def _incident(store: Store, index: int) -> None:
    await store.open_incident("container:race", "died", "race", detail={"last": index})


async def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + GO_TIMEOUT_S
    while not await anyio.Path(path).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        await anyio.sleep(0.005)


async def main(url: str, mode: str, count: int, concurrency: int, ready: Path, go: Path) -> None:
    store = open_store(url)
    await store.open()
    action = {"audit": _audit, "incident": _incident}[mode]
    await anyio.Path(ready).touch()
    await _wait_for(go)
    todo = iter(range(count))

    async def lane() -> None:
        for index in todo:  # lanes share one iterator: COUNT operations in all
            await action(store, index)

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(lane)
    await store.close()
    print(json.dumps({"mode": mode, "done": count}))


if __name__ == "__main__":
    url, mode, count, concurrency, ready, go = sys.argv[1:7]
    anyio.run(main, url, mode, int(count), int(concurrency), Path(ready), Path(go))
