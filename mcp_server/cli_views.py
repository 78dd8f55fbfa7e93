"""Operator commands that read the store directly: status, incidents, incident, jobs, audit.

Tables are plain text sized to the terminal; long work (walking a big audit chain) shows
progress on stderr so stdout stays clean for pipes.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from mcp_server.core.health import STORE_PROBE_S
from mcp_server.core.health_score import HealthScore, health_score, inputs_from_duties
from mcp_server.core.holds import hold_view, split_active
from mcp_server.core.incidents import ACTIVE
from mcp_server.models import AuditEntry, Heartbeat, Hold, Incident, utcnow
from mcp_server.safety.audit import Auditor, audit_keys_and_anchor
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import Settings
from mcp_server.store.base import Store, open_store

LONG_CHAIN = 10_000  # above this, say that the walk may take a moment
EXIT_UNHEALTHY = 3
LIVE_S = 3 * STORE_PROBE_S  # an instance whose heartbeat is older is no longer listed
CLI_MODE = "cli"  # heartbeat rows of `opsmedic status` itself (its write probe)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Store]:
    store = open_store(settings.resolved_store_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column is cut to the terminal width."""
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    width = shutil.get_terminal_size((120, 20)).columns
    lines = []
    for r in cells:
        line = "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ago(ts: datetime | None) -> str:
    if ts is None:
        return "-"
    s = (datetime.now(UTC) - ts).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def incident_rows(incs: Sequence[Incident]) -> str:
    rows = [
        (i.id, i.status.value, i.severity.value, i.target, i.symptom, i.count, ago(i.updated_at),
         i.title[:60])
        for i in incs
    ]  # fmt: skip
    head = ("ID", "STATUS", "SEV", "TARGET", "SYMPTOM", "SEEN", "UPDATED", "TITLE")
    return table(head, rows) if rows else "no incidents"


async def cmd_status(settings: Settings) -> int:
    """Exit 3 (unhealthy) when the store takes no write or a live instance is unhealthy,
    else 1 when incidents are active, else 0."""
    async with opened(settings) as store:
        active = await store.list_incidents(ACTIVE, limit=500)
        jobs = await store.list_jobs(limit=500)
        recent = await store.recent_audit(1)
        holds = split_active(await store.list_holds(), datetime.now(UTC))
        write_error = await _write_probe(store)
        live = await store.list_heartbeats(utcnow() - timedelta(seconds=LIVE_S))
    live = [b for b in live if b.mode != CLI_MODE]
    print(f"store    {settings.resolved_store_url}: {write_error or 'writable'}")
    print(f"mode     {settings.mode}")
    by_status: dict[str, int] = {}
    for inc in active:
        by_status[inc.status.value] = by_status.get(inc.status.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"
    print(f"active   {len(active)} incident(s): {summary}")
    print(health_line(active, live))
    failing = [j for j in jobs if j.status in ("failed", "stalled")]
    print(f"jobs     {len(jobs)} known, {len(failing)} failing or stalled")
    last = recent[0] if recent else None
    print(f"audit    {last.seq if last else 0} entries, last {ago(last.ts if last else None)}")
    print(f"holds    {len(holds)} active (held targets are watched, never healed)")
    if holds:
        print()
        print(hold_rows(holds))
    print(f"live     {len(live)} instance(s), {sum(not b.healthy for b in live)} unhealthy")
    for beat in live:
        print()
        print(instance_view(beat))
    if active:
        print()
        print(incident_rows(active[:20]))
    if write_error or any(not b.healthy for b in live):
        return EXIT_UNHEALTHY
    return 1 if active else 0


def health_line(active: Sequence[Incident], live: Sequence[Heartbeat]) -> str:
    """The health score (README, Health score) over the active incidents and the probes and
    host gradings the live instances reported; the targets that cost the most points."""
    probes, host = inputs_from_duties(d for b in live for d in b.duties.values())
    rows = [{"target": i.target, "severity": i.severity.value, "id": i.id} for i in active]
    score: HealthScore = health_score(rows, probes, host)
    worst = [t for t in score.as_json()["targets"] if t["score"] < 100][:5]
    shown = "; ".join(f"{t['target']} {t['score']} ({', '.join(t['reasons'][:2])})" for t in worst)
    return f"health   {score.overall}/100" + (f": {shown}" if shown else "")


def hold_rows(holds: Sequence[Hold]) -> str:
    now = datetime.now(UTC)
    rows = [
        (h.target, f"{h.until:%Y-%m-%d %H:%M}" if h.until else "-",
         hold_view(h, now)["remaining"], h.actor, h.reason[:60])
        for h in holds
    ]  # fmt: skip
    return table(("HELD", "UNTIL (UTC)", "LEFT", "BY", "REASON"), rows)


async def _write_probe(store: Store) -> str | None:
    """None when the store takes a write (a heartbeat row of this command), else why not."""
    holder = f"{CLI_MODE}:{socket.gethostname()}"  # one row per host, however often it runs
    try:
        await store.put_heartbeat(Heartbeat(holder=holder, ts=utcnow(), mode=CLI_MODE))
    except Exception as exc:  # the answer to "can it be written?", not a crash
        return f"NOT WRITABLE: {exc}"
    return None


def instance_view(beat: Heartbeat) -> str:
    """One live instance: its heartbeat, then every duty with state and last progress."""
    verdict = "healthy" if beat.healthy else "UNHEALTHY"
    head = f"{beat.holder}  {verdict}  mode {beat.mode}  v{beat.version}  beat {ago(beat.ts)}"
    late = (datetime.now(UTC) - beat.ts).total_seconds()
    rows = []
    for name, d in beat.duties.items():
        age = d.get("last_progress_age_s")
        shown = "-" if age is None else f"{age + late:.0f}s ago"
        every = "-" if d.get("interval_s") is None else f"{d['interval_s']:g}s"
        state = d.get("state", "?") if d.get("healthy", True) else f"{d.get('state', '?')} (!)"
        rows.append((name, state, shown, every, d.get("detail", "")))
    return head + "\n" + table(("DUTY", "STATE", "PROGRESS", "EVERY", "DETAIL"), rows)


async def cmd_incidents(settings: Settings, only_open: bool, limit: int) -> int:
    async with opened(settings) as store:
        incs = await store.list_incidents(ACTIVE if only_open else None, limit=limit)
    print(incident_rows(incs))
    return 0


async def cmd_incident(settings: Settings, incident_id: int) -> int:
    async with opened(settings) as store:
        inc = await store.get_incident(incident_id)
        rca = await store.get_rca(incident_id) if inc else None
    if inc is None:
        print(f"no incident {incident_id}; `opsmedic incidents` lists them", file=sys.stderr)
        return 1
    print(f"#{inc.id} {inc.title}")
    print(
        f"target {inc.target}  symptom {inc.symptom}  status {inc.status.value}  "
        f"severity {inc.severity.value}  seen {inc.count}x  opened {ago(inc.opened_at)}"
    )
    if inc.detail:
        print(f"detail {json.dumps(inc.detail, default=str)[:300]}")
    if rca:
        print(
            f"\nRCA ({rca.author}, {rca.category}, confidence {rca.confidence:.2f}): {rca.summary}"
        )
        print(f"recommendation: {rca.recommendation}")
        for ev in rca.evidence[:5]:
            print(f"  [{ev.source}] {ev.line[:160]}")
    print("\ntimeline:")
    rows = [
        (t.ts.strftime("%Y-%m-%d %H:%M:%S"), t.actor, t.kind, t.text[:100]) for t in inc.timeline
    ]
    print(table(("TIME (UTC)", "ACTOR", "KIND", "TEXT"), rows))
    return 0


async def cmd_jobs(settings: Settings) -> int:
    async with opened(settings) as store:
        jobs = await store.list_jobs(limit=500)
    rows = [(j.id, j.bot, j.status, ago(j.last_heartbeat), j.last_run_id or "-") for j in jobs]
    print(table(("JOB", "BOT", "STATUS", "HEARTBEAT", "LAST RUN"), rows) if rows else "no jobs")
    return 0


async def cmd_audit_tail(settings: Settings, limit: int) -> int:
    async with opened(settings) as store:
        entries = list(reversed(await store.recent_audit(limit)))
    print(table(("SEQ", "TIME (UTC)", "ACTOR", "TOOL", "TARGET", "DECISION", "OUTCOME"),
                [_audit_row(e) for e in entries]))  # fmt: skip
    return 0


def _audit_row(e: AuditEntry) -> tuple[Any, ...]:
    ts = e.ts.strftime("%Y-%m-%d %H:%M:%S")
    return (e.seq, ts, e.actor, e.tool, e.target or "-", e.decision or "-", e.outcome)


async def cmd_audit_verify(settings: Settings) -> int:
    """Walk the whole chain; exit 0 ok, 1 broken (naming the first bad seq)."""
    keys, anchor = audit_keys_and_anchor(settings)
    async with opened(settings) as store:
        head = await store.recent_audit(1)
        total = head[0].seq if head else 0
        if total > LONG_CHAIN:
            print(f"verifying {total} audit entries ...", file=sys.stderr, flush=True)
        verdict = await Auditor(store, Redactor(), keys, anchor).verify()
    if verdict.ok:
        print(f"audit chain ok: {verdict.checked} entries verified")
        return 0
    where = f" at seq {verdict.bad_seq}" if verdict.bad_seq is not None else ""
    print(f"audit chain BROKEN{where}: {verdict.reason}")
    return 1


def cmd_config_check(settings: Settings) -> int:
    """Settings already loaded and validated; show the effective, redacted configuration."""
    data = settings.model_dump(mode="json", exclude_none=True, by_alias=True)
    print(json.dumps(data, indent=1, default=str))
    print("configuration ok", file=sys.stderr)
    return 0
