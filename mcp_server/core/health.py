"""Truthful health: the store is written (not pinged), and every duty shows progress.

`StoreProbe` upserts this instance's heartbeat row (`Store.put_heartbeat`): on the
`store` duty every OPSMEDIC_POLICY__HEARTBEAT_S (default STORE_PROBE_S), and on demand for
/healthz, whose verdict is cached for CACHE_S so a busy load balancer costs one write a
second at most. The row also carries
the duties' states, which lets `opsmedic status` list live instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcp_server import __version__
from mcp_server.models import Heartbeat, utcnow
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from mcp_server.deps import Deps

STORE_PROBE_S = 10.0
CACHE_S = 1.0
STORE_DUTY = "store"  # the duty that writes; wiring also marks it running/stopped
FLEET_DUTY = "fleet-watch"  # reads the others' heartbeats (core/fleet.py)
KEEPALIVE_S = 5.0  # event watchers (docker, processes, hub) beat this often while quiet


class StoreProbe:
    """Writes the heartbeat row; `ok` and `error` say how the last write went."""

    def __init__(
        self,
        deps: Deps,
        *,
        interval_s: float | None = None,
        cache_s: float = CACHE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deps = deps
        self.interval_s = deps.settings.policy.heartbeat_s if interval_s is None else interval_s
        self.cache_s = cache_s
        self._monotonic = monotonic
        self._checked: float | None = None
        self._lock = asyncio.Lock()
        self.ok = False
        self.error = "not checked yet"

    async def check(self, max_age_s: float | None = None) -> bool:
        """Write the heartbeat unless a verdict younger than max_age_s (default: cache_s)
        exists; True when the write succeeded. Never raises: a probe reports."""
        age = self.cache_s if max_age_s is None else max_age_s
        async with self._lock:  # callers arriving together share one write
            if self._checked is not None and self._monotonic() - self._checked < age:
                return self.ok
            try:
                await self.deps.store.put_heartbeat(self.heartbeat())
            except Exception as exc:  # any failure to write is the answer, not an error
                self.ok, self.error = False, str(exc) or type(exc).__name__
                self.deps.duties.set(STORE_DUTY, "waiting", f"store write failed: {self.error}")
            else:
                self.ok, self.error = True, ""
                self.deps.duties.beat(STORE_DUTY)
            self._checked = self._monotonic()
            return self.ok

    def heartbeat(self, stopped: bool = False) -> Heartbeat:
        views = self.deps.duties.views()
        return Heartbeat(
            holder=self.deps.holder,
            instance=self.deps.instance,
            ts=utcnow(),
            version=__version__,
            mode=self.deps.settings.mode,
            healthy=all(v.healthy for v in views),
            duties={v.name: v.as_json() for v in views},
            stopped=stopped,
        )

    async def run(self) -> None:
        """The store duty: a write every interval_s, forever; on a clean stop, a last write
        saying so (the fleet raises no incident for an instance that said goodbye)."""
        try:
            while True:
                await self.check(max_age_s=0.0)
                await asyncio.sleep(self.interval_s)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.deps.store.put_heartbeat(self.heartbeat(True)), 5.0)
            raise


async def health(deps: Deps, probe: StoreProbe | None = None) -> dict[str, Any]:
    """The /healthz body: ok only when the store takes a write and every duty progresses."""
    probe = probe or deps.services.store_probe
    store_ok = await probe.check()
    views = deps.duties.views()
    unhealthy = [v.name for v in views if not v.healthy]
    return {
        "ok": store_ok and not unhealthy,
        "store": store_ok,
        "store_error": probe.error or None,
        "tasks": {v.name: v.status for v in views},
        "version": __version__,
        "duties": [v.as_json() for v in views],
        "unhealthy": unhealthy,
        "waiting": [v.name for v in views if v.state == "waiting"],
    }


def intervals(settings: Settings) -> dict[str, float | None]:
    """How often each duty must show progress (None: a plain status, e.g. the probe
    scheduler, whose probes are duties of their own)."""
    return {
        "docker-events": KEEPALIVE_S,
        "process-exits": KEEPALIVE_S,
        "probes": None,
        "host-metrics": settings.thresholds.interval_s + 5.0,
        "mail-outbox": 60.0,
        "imap-replies": settings.imap.poll_s + 10.0,
        "hub-client": KEEPALIVE_S,
        "job-stalls": settings.ingest.stall_check_s,
        "approval-expiry": 30.0,
        # a pass can take a while (state of every managed target) on a busy engine
        "reconcile": settings.policy.reconcile_s + 30.0,
        "swarm": settings.swarm.poll_s + 30.0,
        STORE_DUTY: settings.policy.heartbeat_s,
        FLEET_DUTY: settings.policy.heartbeat_s * 2,
    }
