"""`/metrics` in Prometheus text format, computed from the store at scrape time.

Counters are derived from the audit chain and the event feed, read incrementally by seq
since the previous scrape (so several OpsMedic processes on one shared store report the
same totals, and a restart only re-reads what is there). Each server owns its own
CollectorRegistry, so several servers in one process never collide.

Exported (names as Prometheus shows them):
- opsmedic_incidents{state}                 gauge, incidents per status (newest 10 000;
                                            recounted when an incident event arrived)
- opsmedic_actions_total{type,outcome}      audit entries "action:<type>" (+ clean_disk apply)
- opsmedic_restarts_total{target_kind}      restarts attempted (container / process)
- opsmedic_tool_calls_total{tool,outcome}   MCP tool calls (ok / error / refused)
- opsmedic_tool_call_seconds{tool}          histogram of tool call durations
- opsmedic_events_total{source}             events on the feed by source (docker, incident...)
- opsmedic_ingest_events_total              events that came in from bots / job hubs
- opsmedic_audit_entries                    gauge, newest audit seq
- opsmedic_audit_chain_ok                   gauge 1/0 (verify_audit, cached 30 s)
- opsmedic_audit_head_seq                   gauge, audit seq last anchored outside the store
- duties, escalations, budget, heal failures, refusals by rule, health score: metrics_health
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mcp_server import __version__
from mcp_server.deps import Deps
from mcp_server.models import AuditEntry, Event, IncidentStatus
from mcp_server.web.metrics_health import HealthMetrics
from mcp_server.web.views import ChainCache

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH = 2000
MAX_PER_SCRAPE = 100_000  # rows read per scrape; the rest is picked up by the next one
INCIDENT_SCAN = 10_000
INCIDENT_TTL_S = 60.0  # recounted sooner whenever an incident event arrived


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1

    def buckets(self) -> list[tuple[str, float]]:
        out = [(floatToGoString(b), float(c)) for b, c in zip(BUCKETS, self.counts, strict=True)]
        return [*out, ("+Inf", float(self.total))]


class OpsMetrics(Collector):
    """State behind /metrics. `await refresh()` reads the store; `collect()` only reports."""

    def __init__(self, deps: Deps, chain: ChainCache) -> None:
        self._deps = deps
        self._chain = chain
        self._lock = asyncio.Lock()
        self.audit_seq = 0
        self.event_seq = 0
        self.tool_calls: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, _Histogram] = {}
        self.actions: Counter[tuple[str, str]] = Counter()
        self.restarts: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.ingest = 0
        self.incidents: dict[str, int] = {s.value: 0 for s in IncidentStatus}
        self._incidents_at = float("-inf")
        self._incidents_changed = True
        self.chain_ok: bool | None = None
        self.health = HealthMetrics(deps)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def render(self) -> bytes:
        """Refresh from the store, then the exposition text."""
        await self.refresh()
        return generate_latest(self.registry)

    async def refresh(self) -> None:
        async with self._lock:
            await self._read_audit()
            await self._read_events()
            stale = time.monotonic() - self._incidents_at >= INCIDENT_TTL_S
            if stale or self._incidents_changed:
                await self._count_incidents()
            self.chain_ok = (await self._chain.get()).ok
            await self.health.refresh()

    async def _read_audit(self) -> None:
        read = 0
        while read < MAX_PER_SCRAPE:
            batch = await self._deps.store.audit_entries(after_seq=self.audit_seq, limit=BATCH)
            for entry in batch:
                self._count_audit(entry)
                self.audit_seq = entry.seq
            read += len(batch)
            if len(batch) < BATCH:
                return

    def _count_audit(self, e: AuditEntry) -> None:
        self.health.count_audit(e)
        if e.tool.startswith("action:"):
            kind = e.tool.removeprefix("action:")
            if e.outcome == "started":  # written just before the action runs
                if kind == "restart":
                    self.restarts[(e.target or "unknown").partition(":")[0]] += 1
            else:
                self.actions[(kind, e.outcome)] += 1
            return
        if ":" in e.tool or e.outcome == "started":  # notes and other internal records
            return
        self.tool_calls[(e.tool, e.outcome)] += 1
        if e.duration_ms is not None:
            self.latency.setdefault(e.tool, _Histogram()).observe(e.duration_ms / 1000)
        if e.tool == "clean_disk" and e.args.get("action") == "apply":
            self.actions[("clean_disk", e.outcome)] += 1

    async def _read_events(self) -> None:
        read = 0
        while read < MAX_PER_SCRAPE:
            batch = await self._deps.store.events_after(self.event_seq, limit=BATCH)
            for event in batch:
                self._count_event(event)
                self.event_seq = max(self.event_seq, event.seq or 0)
            read += len(batch)
            if len(batch) < BATCH:
                return

    def _count_event(self, e: Event) -> None:
        self.health.count_event(e)
        source = e.source.partition(":")[0] or "unknown"  # "hub:wss://..." -> "hub"
        self.events[source] += 1
        if source == "incident":
            self._incidents_changed = True
        if source in ("ingest", "hub"):
            self.ingest += 1

    async def _count_incidents(self) -> None:
        counts = {s.value: 0 for s in IncidentStatus}
        for inc in await self._deps.store.list_incidents(limit=INCIDENT_SCAN):
            counts[inc.status.value] += 1
        self.incidents = counts
        self._incidents_at = time.monotonic()
        self._incidents_changed = False

    # --- prometheus_client side ----------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        yield _gauge("opsmedic_info", "OpsMedic version", [("version", __version__)], 1)
        incidents = GaugeMetricFamily("opsmedic_incidents", "Incidents by state", labels=["state"])
        for state, n in sorted(self.incidents.items()):
            incidents.add_metric([state], n)
        yield incidents
        yield _counter(
            "opsmedic_actions", "Heal actions by type, outcome", ["type", "outcome"], self.actions
        )
        yield _counter(
            "opsmedic_restarts",
            "Restarts attempted, by target kind",
            ["target_kind"],
            {(k,): v for k, v in self.restarts.items()},
        )
        yield _counter(
            "opsmedic_tool_calls", "MCP tool calls", ["tool", "outcome"], self.tool_calls
        )
        hist = HistogramMetricFamily(
            "opsmedic_tool_call_seconds", "MCP tool call duration", labels=["tool"]
        )
        for tool, h in sorted(self.latency.items()):
            hist.add_metric([tool], h.buckets(), h.sum)
        yield hist
        yield _counter(
            "opsmedic_events",
            "Events on the feed, by source",
            ["source"],
            {(k,): v for k, v in self.events.items()},
        )
        yield CounterMetricFamily(
            "opsmedic_ingest_events", "Events received from bots and job hubs", value=self.ingest
        )
        yield _gauge("opsmedic_audit_entries", "Newest audit entry seq", [], self.audit_seq)
        anchored = self._deps.auditor.anchored_seq
        if anchored is not None:
            yield _gauge(
                "opsmedic_audit_head_seq", "Audit seq anchored outside the store", [], anchored
            )
        if self.chain_ok is not None:
            ok = 1 if self.chain_ok else 0
            yield _gauge("opsmedic_audit_chain_ok", "1 when the audit hash chain verifies", [], ok)
        yield from self.health.collect()


def _counter(
    name: str, doc: str, labels: list[str], values: dict[Any, int] | Counter[Any]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric(list(key), n)
    return family


def _gauge(name: str, doc: str, labels: Iterable[tuple[str, str]], value: float) -> Metric:
    pairs = list(labels)
    family = GaugeMetricFamily(name, doc, labels=[k for k, _ in pairs])
    family.add_metric([v for _, v in pairs], value)
    return family
