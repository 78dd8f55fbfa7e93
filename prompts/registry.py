"""Prompt assembly: gather facts from the store and backends, frame logs as untrusted data."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from string import Template
from typing import Literal

from fastmcp import Context, FastMCP

from mcp_server.backends.logsummary import MINE_CHARS, summarize
from mcp_server.core.holds import Holds, held_note
from mcp_server.core.incidents import ACTIVE, incident_row
from mcp_server.core.logsources import read_source
from mcp_server.deps import Deps, deps_of
from mcp_server.errors import NotFound, OpsMedicError
from mcp_server.models import Incident
from mcp_server.safety.redaction import frame_untrusted

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
EVIDENCE_LINES = 10_000  # read for the summary: the whole story, not only the last lines
EVIDENCE_CHARS = 8000  # the summary's budget; every error template is kept even past it
EVIDENCE_MAX_CHARS = 20_000  # hard cap of the framed evidence in the prompt
TIMELINE_ENTRIES = 25
TIMELINE_MAX_CHARS = 6000
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def template(name: str) -> Template:
    """Read prompts/<name>.md fresh on each use, so operator edits apply without a restart."""
    return Template((HERE / f"{name}.md").read_text(encoding="utf-8"))


async def render_rca(deps: Deps, incident_id: int) -> str:
    inc = await deps.store.get_incident(incident_id)
    if inc is None:
        raise NotFound(f"no incident {incident_id}; call list_incidents for ids")
    return template("rca").safe_substitute(
        incident_id=inc.id,
        target=inc.target,
        incident=_incident_text(inc),
        timeline=frame_untrusted(  # RCA summaries and notes in it may quote log text
            _timeline_text(inc),
            f"the timeline of incident {inc.id} (notes and stored RCA text)",
            max_chars=TIMELINE_MAX_CHARS,
            redactor=deps.redactor,
        ),
        evidence=await _evidence(deps, inc),
        metrics=await _metrics(deps),
        history=await _history(deps, inc),
    )


async def render_triage(deps: Deps, scope: str) -> str:
    active = await deps.store.list_incidents(ACTIVE, limit=100)
    if scope != "all":
        active = [i for i in active if i.target.startswith(f"{scope}:") or i.target == scope]
    active.sort(key=lambda i: (SEVERITY_RANK.get(i.severity.value, 3), -i.count))
    rows = [json.dumps(incident_row(i), separators=(",", ":")) for i in active[:40]]
    return template("triage").safe_substitute(
        scope=scope,
        incidents="\n".join(rows) or "none",
        targets=await _targets(deps, scope),
        host=await _metrics(deps),
    )


def _incident_text(inc: Incident) -> str:
    detail = json.dumps(inc.detail, default=str)[:800]
    return (
        f"id {inc.id}; target {inc.target}; symptom {inc.symptom}; severity {inc.severity.value};"
        f" status {inc.status.value}; seen {inc.count} time(s) since"
        f" {inc.opened_at.isoformat(timespec='seconds')}\ntitle: {inc.title}\ndetail: {detail}"
    )


def _timeline_text(inc: Incident) -> str:
    entries = inc.timeline[-TIMELINE_ENTRIES:]
    lines = [f"{t.ts.isoformat(timespec='seconds')} {t.actor} {t.kind}: {t.text}" for t in entries]
    cut = len(inc.timeline) - len(entries)
    return (f"({cut} earlier entries not shown)\n" if cut else "") + "\n".join(lines)


async def _evidence(deps: Deps, inc: Incident) -> str:
    kind = inc.target.partition(":")[0]
    if kind not in ("container", "process", "job", "file"):
        return "(no log source for this target)"
    try:
        lines, note = await read_source(deps, inc.target, EVIDENCE_LINES, max_line_chars=MINE_CHARS)
    except OpsMedicError as exc:
        return f"(logs unavailable: {exc})"
    # errors first with counts and line ranges, then frequent info and the latest lines:
    # a model sees every distinct failure within its budget, not only the last 120 lines
    text = summarize(lines, budget_chars=EVIDENCE_CHARS).render() + (f"\n[{note}]" if note else "")
    return frame_untrusted(text, inc.target, max_chars=EVIDENCE_MAX_CHARS, redactor=deps.redactor)


async def _metrics(deps: Deps) -> str:
    host = deps.services.host
    if host is None:
        return "(host metrics unavailable)"
    report = await host.read_host(deps.settings.thresholds)
    return str(report.render(limit=1200))


async def _history(deps: Deps, inc: Incident) -> str:
    rows = await deps.store.list_incidents(limit=200)
    same = [i for i in rows if i.target == inc.target and i.id != inc.id][:10]
    lines = [json.dumps(incident_row(i), separators=(",", ":")) for i in same]
    if inc.target.startswith("job:"):
        runs = await deps.store.list_runs(subject=inc.target[4:], limit=10)
        lines += [f"run {r.id}: {r.status} {r.error or ''}".strip() for r in runs]
    return "\n".join(lines) or "no earlier incidents"


async def _targets(deps: Deps, scope: str) -> str:
    lines: list[str] = []
    docker = deps.services.docker
    if docker is not None and scope in ("all", "container"):
        try:
            lines += [r.line() for r in await docker.list_containers()][:60]
        except OpsMedicError as exc:
            lines.append(f"containers: {exc}")
    sup = deps.services.processes
    if sup is not None and scope in ("all", "process"):
        lines += [f"process:{p.name} running={p.running} restarts={p.restarts}" for p in sup.list()]
    if scope in ("all", "job"):
        jobs = await deps.store.list_jobs(limit=60)
        lines += [f"job:{j.id} {j.status} last heartbeat {j.last_heartbeat}" for j in jobs]
    holds = deps.services.holds
    if isinstance(holds, Holds):
        held = await holds.list_active()
        lines += [f"{h.target} {held_note(h)}" for h in held if scope in ("all", _kind(h.target))]
    return "\n".join(lines) or "none"


def _kind(target: str) -> str:
    return target.partition(":")[0]


async def rca(incident_id: int, ctx: Context) -> str:
    """Root-cause analysis of one incident: its facts, timeline, log evidence (untrusted),
    metrics and history, and the JSON answer format (record it with record_rca)."""
    return await render_rca(deps_of(ctx), int(incident_id))


async def triage(
    ctx: Context, scope: Literal["all", "container", "process", "job", "probe", "host"] = "all"
) -> str:
    """Rank what needs attention now across incidents, targets and the host."""
    return await render_triage(deps_of(ctx), scope)


def register(server: FastMCP) -> None:
    server.prompt(rca)
    server.prompt(triage)
