"""A fleet on one store: every OpsMedic's heartbeat, and an incident for one gone silent.

Each instance writes a heartbeat row every OPSMEDIC_POLICY__HEARTBEAT_S (core/health.py),
named by OPSMEDIC_INSTANCE. `FleetWatch` (the `fleet-watch` duty of every instance) reads
them all: an instance whose newest row is older than SILENT_BEATS of its own intervals, and
whose last write did not say it stopped cleanly, is the incident `instance:NAME` / `silent`.
Whichever live instance sees it first raises it (the store deduplicates, and a watcher that
finds it already open leaves it alone); an instance never reports itself. It is resolved when
the instance beats again or stops cleanly.

`fleet_view` is the dashboard's fleet: instances with their duties, plus Swarm nodes and
services with replicas when a `FleetSource` is wired in Services (empty lists otherwise).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from mcp_server.core.duties import beat as duty_beat
from mcp_server.core.health import STORE_DUTY
from mcp_server.core.incidents import ACTIVE, Incidents
from mcp_server.models import Heartbeat, IncidentStatus, Severity, utcnow

if TYPE_CHECKING:
    from mcp_server.deps import Deps

SILENT_BEATS = 2.0  # missed intervals before an instance is silent
WATCH_S = 3600.0  # instances silent longer than this are history, not news
KIND = "instance"
SYMPTOM = "silent"
CLI_MODE = "cli"  # heartbeat rows of `opsmedic status` itself: not an instance
MAX_ROWS = 200  # services / nodes shown by the fleet view

State = Literal["live", "silent", "stopped"]


@runtime_checkable
class FleetSource(Protocol):
    """What a Swarm backend offers the fleet view (both lists bounded by the source)."""

    async def fleet_services(self) -> list[dict[str, Any]]:
        """Services: {"name", "mode", "desired", "running", "image"?, "updated_at"?}."""
        ...

    async def fleet_nodes(self) -> list[dict[str, Any]]:
        """Nodes: {"name", "role", "state", "availability", "leader"?, "engine"?}."""
        ...


@dataclass(frozen=True)
class Member:
    """One instance of the fleet, by its newest heartbeat."""

    instance: str
    beat: Heartbeat
    age_s: float
    interval_s: float
    state: State
    processes: int  # heartbeat rows under this name in the window (restarts, or a clash)


def beat_interval(beat: Heartbeat, default_s: float) -> float:
    """How often this instance said it beats (its store duty), else the local setting."""
    value = (beat.duties.get(STORE_DUTY) or {}).get("interval_s")
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default_s


def members(beats: list[Heartbeat], now: datetime, default_interval_s: float) -> list[Member]:
    """Instances (by name, newest row wins), sorted by name, each live / silent / stopped."""
    newest: dict[str, Heartbeat] = {}
    rows: dict[str, int] = {}
    for beat in beats:
        if beat.mode == CLI_MODE:
            continue
        name = beat.instance or beat.holder  # rows written before instance names existed
        rows[name] = rows.get(name, 0) + 1
        if name not in newest or beat.ts > newest[name].ts:
            newest[name] = beat
    out = []
    for name in sorted(newest):
        beat = newest[name]
        age = max(0.0, (now - beat.ts).total_seconds())
        every = beat_interval(beat, default_interval_s)
        state: State = "stopped" if beat.stopped else "live"
        if not beat.stopped and age > SILENT_BEATS * every:
            state = "silent"
        out.append(Member(name, beat, age, every, state, rows[name]))
    return out


class FleetWatch:
    """The `fleet-watch` duty: raises and resolves `instance:NAME` incidents."""

    def __init__(self, deps: Deps, incidents: Incidents) -> None:
        self.deps = deps
        self.incidents = incidents

    @property
    def interval_s(self) -> float:
        return self.deps.settings.policy.heartbeat_s

    async def run(self) -> None:
        """Check twice per heartbeat interval, forever (failures: supervise())."""
        while True:
            await self.check()
            duty_beat()
            await asyncio.sleep(self.interval_s / 2)

    async def check(self, now: datetime | None = None) -> list[Member]:
        """One pass; returns the instances seen (tests and the dashboard read them)."""
        now = now or utcnow()
        store = self.deps.store
        beats = await store.list_heartbeats(now - timedelta(seconds=WATCH_S))
        seen = members(beats, now, self.interval_s)
        open_ = {
            i.target: i
            for i in await store.list_incidents(ACTIVE, limit=500)
            if i.symptom == SYMPTOM and i.target.startswith(f"{KIND}:")
        }
        for m in seen:
            if m.instance == self.deps.instance:
                continue  # a silent instance cannot say so; its heartbeat says it is alive
            target = f"{KIND}:{m.instance}"
            if m.state == "silent" and target not in open_:
                await self._raise(target, m)
            elif m.state != "silent" and target in open_:
                why = "beating again" if m.state == "live" else "stopped cleanly"
                text = f"{m.instance} {why} (seen by {self.deps.instance})"
                inc = open_[target]
                await self.incidents.transition(inc.id, IncidentStatus.resolved, text)
        return seen

    async def _raise(self, target: str, m: Member) -> None:
        title = (
            f"OpsMedic instance {m.instance} is silent: no heartbeat for {m.age_s:.0f}s "
            f"(it beats every {m.interval_s:g}s)"
        )
        detail = {
            "last_beat": m.beat.ts.isoformat(),
            "silent_s": round(m.age_s, 1),
            "interval_s": m.interval_s,
            "holder": m.beat.holder,
            "version": m.beat.version,
            "seen_by": self.deps.instance,
        }
        await self.incidents.report(target, SYMPTOM, title, Severity.critical, detail)


def member_view(m: Member, me: str) -> dict[str, Any]:
    duties = [
        {
            "name": name,
            "state": d.get("state", "?"),
            "healthy": bool(d.get("healthy", True)),
            "detail": str(d.get("detail", ""))[:200],
        }
        for name, d in sorted(m.beat.duties.items())
    ]
    return {
        "instance": m.instance,
        "self": m.instance == me,
        "state": m.state,
        "healthy": m.beat.healthy and m.state == "live",
        "last_beat": m.beat.ts.isoformat(),
        "age_s": round(m.age_s, 1),
        "interval_s": m.interval_s,
        "version": m.beat.version,
        "mode": m.beat.mode,
        "holder": m.beat.holder,
        "processes": m.processes,
        "duties": duties,
    }


async def fleet_view(deps: Deps, source: FleetSource | None) -> dict[str, Any]:
    """The /api/fleet body: instances (from heartbeats), services and nodes (from source)."""
    now = utcnow()
    beats = await deps.store.list_heartbeats(now - timedelta(seconds=WATCH_S))
    seen = members(beats, now, deps.settings.policy.heartbeat_s)
    services: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    if source is not None:
        services = (await source.fleet_services())[:MAX_ROWS]
        nodes = (await source.fleet_nodes())[:MAX_ROWS]
    return {
        "instance": deps.instance,
        "heartbeat_s": deps.settings.policy.heartbeat_s,
        "silent_after_beats": SILENT_BEATS,
        "instances": [member_view(m, deps.instance) for m in seen],
        "swarm": source is not None,
        "services": services,
        "nodes": nodes,
    }
