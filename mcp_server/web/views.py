"""What the dashboard and the JSON API show, shaped from the store and the backends.

Pure shaping plus reads; no HTTP here (see routes.py). Every function degrades per source:
a Docker engine that is down turns into an `error` on its part of the overview, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mcp_server import __version__
from mcp_server.core.health_score import score_now
from mcp_server.core.holds import Holds, hold_view, label_hold
from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.errors import OpsMedicError
from mcp_server.models import AuditVerdict, Event, Incident, IncidentStatus

logger = logging.getLogger(__name__)

HISTORY_POINTS = 360  # one hour at one point per 10 s
MIN_SAMPLE_S = 5.0
CHAIN_TTL_S = 30.0
ACTIVE = [s for s in IncidentStatus if s is not IncidentStatus.resolved]
BULK_SOURCES = frozenset({"ingest", "hub"})  # event sources that arrive in floods


class HostHistory:
    """Ring buffer of compact host readings for charts over time.

    `sample()` takes a reading at most every `min_interval_s` (callers share the latest one),
    so the dashboard, the SSE stream and the API may all ask without loading the host.
    """

    def __init__(
        self,
        deps: Deps,
        size: int = HISTORY_POINTS,
        min_interval_s: float = MIN_SAMPLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deps = deps
        self._points: deque[dict[str, Any]] = deque(maxlen=size)
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._taken_at: float | None = None
        self._latest: Any = None
        self._lock = asyncio.Lock()

    @property
    def min_interval_s(self) -> float:
        return self._min_interval_s

    async def sample(self) -> tuple[Any, bool]:
        """(latest HostReport or None when there is no host backend, whether it is new)."""
        host = self._deps.services.host
        if host is None:
            return None, False
        async with self._lock:
            now = self._clock()
            if self._taken_at is not None and now - self._taken_at < self._min_interval_s:
                return self._latest, False
            self._latest = await host.read_host(self._deps.settings.thresholds)
            self._taken_at = self._clock()
            self._points.append(host_point(self._latest))
            return self._latest, True

    def points(self) -> list[dict[str, Any]]:
        return list(self._points)


def host_point(report: Any) -> dict[str, Any]:
    """One chart point: unix time and the percentages worth plotting."""
    disks = [d.percent for d in report.disks]
    return {
        "t": round(report.at.timestamp(), 3),
        "cpu": report.cpu.percent,
        "mem": report.memory.percent,
        "swap": report.swap.percent,
        "load1": report.load.load1,
        "disk": max(disks) if disks else None,
    }


def host_view(report: Any) -> dict[str, Any]:
    """The current host reading without per-process detail (that stays in read_metrics)."""
    data: dict[str, Any] = report.model_dump(mode="json", exclude={"top_cpu", "top_memory"})
    data["cpu"].pop("per_core", None)
    return data


class ChainCache:
    """verify_audit walks the whole chain, so its verdict is kept for `ttl_s` seconds."""

    def __init__(self, deps: Deps, ttl_s: float = CHAIN_TTL_S) -> None:
        self._deps = deps
        self._ttl_s = ttl_s
        self._verdict: AuditVerdict | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> AuditVerdict:
        async with self._lock:
            if self._verdict is None or time.monotonic() - self._at >= self._ttl_s:
                self._verdict = await self._deps.auditor.verify()
                self._at = time.monotonic()
            return self._verdict


# --- rows ----------------------------------------------------------------------------------


def incident_row(inc: Incident) -> dict[str, Any]:
    """An incident in a list: everything but detail and the full timeline."""
    row = inc.model_dump(mode="json", exclude={"detail", "timeline"})
    row["last_event"] = inc.timeline[-1].model_dump(mode="json") if inc.timeline else None
    return row


async def incident_rows(deps: Deps, rows: list[Incident], with_rca: bool) -> list[dict[str, Any]]:
    """List rows; with_rca adds each incident's RCA summary, category and author (or None)."""
    out = []
    for inc in rows:
        row = incident_row(inc)
        if with_rca:
            rca = await deps.store.get_rca(inc.id)
            row["rca"] = (
                rca.model_dump(mode="json", include={"summary", "category", "author", "confidence"})
                if rca
                else None
            )
        out.append(row)
    return out


def event_row(e: Event) -> dict[str, Any]:
    return e.model_dump(mode="json", exclude_none=True)


def stream_rows(events: list[Event]) -> list[dict[str, Any]]:
    """Rows for the live stream: one per event, except that events from bots and job hubs
    (possibly thousands a second) collapse into one `ingest.batch` row per batch, last."""
    rows: list[dict[str, Any]] = []
    bulk = [e for e in events if e.source.partition(":")[0] in BULK_SOURCES]
    rows.extend(event_row(e) for e in events if e.source.partition(":")[0] not in BULK_SOURCES)
    if bulk:
        last = max(bulk, key=lambda e: e.seq or 0)
        targets = sorted({e.target for e in bulk if e.target})
        rows.append(
            {
                "seq": last.seq,
                "ts": last.ts.isoformat(),
                "source": "ingest",
                "type": "ingest.batch",
                "data": {"count": len(bulk), "targets": targets[:20]},
            }
        )
    return sorted(rows, key=lambda r: r["seq"] or 0)


async def incident_detail(deps: Deps, inc: Incident) -> dict[str, Any]:
    """Incident with timeline, RCA, pending approvals (when linked) and related runs."""
    rca = await deps.store.get_rca(inc.id)
    runs = await deps.store.list_runs(subject=inc.target, limit=10)
    return {
        "incident": inc.model_dump(mode="json"),
        "rca": rca.model_dump(mode="json") if rca else None,
        "approvals": await _pending_approvals(deps, inc),
        "runs": [r.model_dump(mode="json") for r in runs],
    }


async def _pending_approvals(deps: Deps, inc: Incident) -> list[dict[str, Any]]:
    """Approvals linked from incident.detail ("approval_id" or "approval_ids") that still
    wait for a person, so the dashboard can offer approve/deny."""
    ids = inc.detail.get("approval_ids") or [inc.detail.get("approval_id")]
    out = []
    for approval_id in ids if isinstance(ids, list) else []:
        if not isinstance(approval_id, str):
            continue
        approval = await deps.store.get_approval(approval_id)
        if approval is not None and approval.status == "pending":
            keep = {"id", "action", "approver", "expires_at", "status"}
            out.append(approval.model_dump(mode="json", include=keep))
    return out


# --- overview ------------------------------------------------------------------------------


async def overview(deps: Deps, history: HostHistory, chain: ChainCache) -> dict[str, Any]:
    """Targets and their health, incidents by status, host status, duties, audit chain."""
    active = await deps.store.list_incidents(ACTIVE, limit=500)
    open_by_target: dict[str, int] = {}
    by_status = {s.value: 0 for s in IncidentStatus}
    for inc in active:
        open_by_target[inc.target] = open_by_target.get(inc.target, 0) + 1
        by_status[inc.status.value] += 1
    targets: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    for name, reader in (("docker", _containers), ("processes", _processes), ("probes", _probes)):
        rows, state = await reader(deps)
        targets.extend(rows)
        sources[name] = state
    host = await _host_target(history)
    sources["host"] = "ok" if host else "off"
    if host:
        targets.append(host["target"])
    restarts = (await deps.services.actions.ledger()).history
    for t in targets:
        t["incidents"] = open_by_target.get(t["target"], 0)
        if t["kind"] in ("container", "process"):
            t["restarts_24h"] = len(restarts(t["target"]))
    holds = await _mark_held(deps, targets)
    verdict = await chain.get()
    score = await score_now(deps.store, [v.as_json() for v in deps.duties.views()])
    return {
        "version": __version__,
        "mode": deps.settings.mode,
        "incidents": {"active": len(active), "by_status": by_status},
        "targets": targets,
        "sources": sources,
        "host": host["view"] if host else None,
        "tasks": dict(deps.tasks),
        "audit": verdict.model_dump(mode="json"),
        "holds": holds,
        "health": score.as_json(),
    }


async def _mark_held(deps: Deps, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each held target its hold (a stored one wins over a label); return every active
    hold, targets not currently listed included, ordered by target."""
    stored: dict[str, dict[str, Any]] = {}
    holds = deps.services.holds
    if isinstance(holds, Holds):
        now = holds.now()
        try:
            stored = {h.target: hold_view(h, now) for h in await holds.list_active(now)}
        except OpsMedicError as exc:  # the rest of the page still works
            logger.warning("reading holds for the dashboard failed: %s", exc)
    for t in targets:
        if t["target"] in stored:
            t["held"] = stored[t["target"]]
    shown = {t["target"]: t["held"] for t in targets if "held" in t}
    return [v for _k, v in sorted({**shown, **stored}.items())]


def _target(kind: str, name: str, status: str, health: str, detail: str) -> dict[str, Any]:
    """health is ok / warn / crit, the same words host metrics use."""
    return {
        "target": f"{kind}:{name}" if kind != "host" else "host",
        "kind": kind,
        "name": name,
        "status": status,
        "health": health,
        "detail": detail,
    }


async def _containers(deps: Deps) -> tuple[list[dict[str, Any]], str]:
    docker = deps.services.docker
    if docker is None:
        return [], "off"
    try:
        rows = await docker.list_containers()
    except OpsMedicError as exc:
        return [], f"error: {exc}"
    out = []
    for c in rows:
        bad = c.status in ("exited", "dead") or c.health == "unhealthy"
        warn = c.status in ("restarting", "paused", "created") or c.health == "starting"
        health = "crit" if bad else "warn" if warn else "ok"
        status = c.status if c.health == "none" else f"{c.status} ({c.health})"
        row = _target("container", c.name, status, health, c.line())
        held = label_hold(Target("container", c.name), c.labels, datetime.now(UTC))
        if held is not None:
            row["held"] = hold_view(held, held.created_at)
        out.append(row)
    return out, "ok"


async def _processes(deps: Deps) -> tuple[list[dict[str, Any]], str]:
    supervisor = deps.services.processes
    if supervisor is None:
        return [], "off"
    out = []
    for p in supervisor.list():
        if p.running:
            row = _target("process", p.name, "running", "ok", f"pid {p.pid}")
        else:
            how = f"signal {p.signal}" if p.signal else f"exit code {p.exit_code}"
            why = p.last_error or (how if p.exited_at else "not started")
            health = "warn" if p.exit_code == 0 else "crit"  # a clean exit may be intended
            row = _target("process", p.name, "stopped", health, why)
        out.append(row)
    return out, "ok"


async def _probes(deps: Deps) -> tuple[list[dict[str, Any]], str]:
    scheduler = deps.services.probes
    if scheduler is None:
        return [], "off"
    grades = {"ok": "ok", "warn": "warn", "fail": "crit"}
    out = []
    for r in scheduler.results():
        latency = f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else ""
        detail = r.error or r.detail or f"{r.target} {latency}".strip()
        out.append(_target("probe", r.name, r.status, grades.get(r.status, "warn"), detail))
    return out, "ok"


async def _host_target(history: HostHistory) -> dict[str, Any] | None:
    try:
        report, _new = await history.sample()
    except Exception:  # psutil can fail in odd containers; the rest of the page still works
        logger.exception("reading host metrics for the dashboard failed")
        return None
    if report is None:
        return None
    detail = f"cpu {report.cpu.percent:.0f}%, mem {report.memory.percent:.0f}%"
    return {
        "target": _target("host", report.hostname, report.status, report.status, detail),
        "view": host_view(report),
    }
