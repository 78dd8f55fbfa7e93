"""An action's lease on its target (renewed while it runs) and the event it publishes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio

from mcp_server.core.targets import Target
from mcp_server.errors import Refused
from mcp_server.models import Event, Run, utcnow

logger = logging.getLogger("mcp_server.core.actions")

LEASE_TTL_S = 15.0  # a dead holder blocks a target at most this long
RENEW_S = LEASE_TTL_S / 3


def lease_name(target: Target | str) -> str:
    return f"action:{target}"


@contextlib.asynccontextmanager
async def action_lease(store: Any, holder: str, target: Target) -> AsyncIterator[None]:
    """Hold the target's action lease, renewed while the action runs; refuse (with a
    retry time) when another holder has it."""
    name = lease_name(target)
    if not await store.acquire_lease(name, holder, LEASE_TTL_S, utcnow()):
        wait = LEASE_TTL_S / 3
        raise Refused(
            f"another OpsMedic is acting on {target} now; its result lands on the incident.",
            {
                "refused": True,
                "rule": "concurrency",
                "target": str(target),
                "wait_s": wait,
                "retry_at": (utcnow() + timedelta(seconds=wait)).isoformat(),
                "remedy": "retry later",
                "escalate": False,
            },
        )

    async def renew() -> None:
        while True:
            await anyio.sleep(RENEW_S)
            if not await store.acquire_lease(name, holder, LEASE_TTL_S, utcnow()):
                logger.warning("lost the action lease on %s", target)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(renew)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the action's own error (a refusal...), unwrapped
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await store.release_lease(name, holder)


def action_event(run: Run, incident_id: int | None, ok: bool, detail: str) -> Event:
    return Event(
        id=f"action:{run.id}",
        source="action",
        type=f"action.{run.detail.get('action', 'restart')}",
        target=run.subject,
        incident_id=incident_id,
        data={"ok": ok, "detail": detail[:300], "run_id": run.id},
    )
