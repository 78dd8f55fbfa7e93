"""Rules RCA for swarm services: the failing tasks across replicas, and the last update.

The incident the swarm watcher opened carries the facts: the failing tasks' errors and exit
codes, its replicas' logs summarised into templates (errors first, with counts), and, when
the failures began after a spec change, what that update changed. The log category is scored
by the same cues as any target (`rules.diagnose`); what differs is the verdict's frame:

- failures that follow an update: the update is the first suspect whatever the logs say;
  the recommendation is a rollback, and a restart is not safe (it redeploys the same spec);
- otherwise: the category's own advice, said of all replicas, with the task errors quoted.
"""

from __future__ import annotations

from typing import Any

from agent_runner import rules
from mcp_server.models import Evidence, Rca

MAX_FACTS = 3


def triage_service(incident: dict[str, Any], evidence: list[tuple[str, str]]) -> Rca:
    target = str(incident.get("target") or "the service")
    detail = incident.get("detail") if isinstance(incident.get("detail"), dict) else {}
    assert isinstance(detail, dict)
    source = f"incident:{incident.get('id', '?')}"
    codes = [c for c in detail.get("exit_codes") or [] if isinstance(c, int)]
    summarised = f"{target} (all replicas, summarised)"
    pairs = [(summarised, str(t)) for t in detail.get("log_summary") or []] + evidence
    facts = {**incident, "detail": {**detail, "exit_code": codes[-1] if codes else None}}
    verdict = rules.diagnose(facts, pairs)
    quoted = _facts(detail, source) + _quotes(verdict, pairs)
    update = detail.get("update") if isinstance(detail.get("update"), dict) else None
    replicas = len(detail.get("replicas_logging") or []) or "its"
    failures = int(detail.get("failures") or 0)
    seen = f"{failures} task failures across {replicas} replicas" if failures else "its tasks"
    logs = (
        "no known failure pattern in the logs"
        if verdict.category == "unknown"
        else (rules.ADVICE[verdict.category][0].format(target=target).rstrip("."))
    )
    if update is not None:
        changed = "; ".join(str(c) for c in (update.get("changed") or [])[:2]) or "its spec"
        summary = (
            f"{target}: {seen} began after its update at {update.get('at') or '?'} "
            f"(changed {changed}); the update is the first suspect. Logs: {logs}."
        )
        advice = (
            f"Roll back: rollback(target='{target}') restores the previous spec; then fix "
            f"the new spec ({changed}) before deploying it again. A restart redeploys "
            "the same broken spec."
        )
        safe, confidence = False, max(verdict.confidence, 0.7)
    else:
        summary = f"{target}: {seen}; {logs}."
        advice = (
            rules.ADVICE[verdict.category][1].format(target=target)
            if verdict.category != "unknown"
            else rules.UNKNOWN_RECOMMENDATION
        )
        safe, confidence = verdict.category in ("dependency", "unknown"), verdict.confidence
    return Rca(
        incident_id=int(incident.get("id") or 0),
        summary=summary[:2000],
        category=verdict.category,
        evidence=quoted[: rules.MAX_EVIDENCE + MAX_FACTS],
        recommendation=advice[:2000],
        restart_safe=safe,
        confidence=round(confidence, 2),
        author="rules",
    )


def triage_node(incident: dict[str, Any]) -> Rca:
    """A node is never acted on: say what it is, which tasks left it and where they went."""
    target = str(incident.get("target") or "the node")
    detail = incident.get("detail") if isinstance(incident.get("detail"), dict) else {}
    assert isinstance(detail, dict)
    source = f"incident:{incident.get('id', '?')}"
    moved = [str(m) for m in detail.get("moved") or []]
    went = [m for m in moved if " -> " in m]
    lost = [m for m in moved if " -> " not in m]
    state = f"status {detail.get('status', '?')}, manager {detail.get('reachability') or 'n/a'}"
    summary = (
        f"{target} is lost to the swarm ({state}). {len(went)} of its tasks were "
        f"rescheduled on other nodes, {len(lost)} not (yet)."
    )
    advice = (
        f"OpsMedic does not act on nodes: check the host behind {target} (dockerd, "
        "network, power, disk) and bring it back; the swarm already moved what it could. "
        "If it is a manager, keep a majority of managers reachable (quorum)."
    )
    evidence = [Evidence(source=source, line=m[: rules.MAX_LINE_CHARS]) for m in moved[:5]]
    return Rca(
        incident_id=int(incident.get("id") or 0),
        summary=summary,
        category="unknown",
        evidence=evidence or [Evidence(source=source, line=str(incident.get("title")))],
        recommendation=advice,
        restart_safe=False,
        confidence=0.6,
        author="rules",
    )


def _facts(detail: dict[str, Any], source: str) -> list[Evidence]:
    """The update's change first, then the newest task errors (engine facts, not logs)."""
    out: list[Evidence] = []
    update = detail.get("update")
    if isinstance(update, dict):
        for change in (update.get("changed") or [])[:2]:
            out.append(Evidence(source=source, line=f"update {update.get('at')}: {change}"))
    for error in (detail.get("errors") or [])[-MAX_FACTS:]:
        out.append(Evidence(source=source, line=str(error)[: rules.MAX_LINE_CHARS]))
    return out


def _quotes(verdict: rules.Verdict, pairs: list[tuple[str, str]]) -> list[Evidence]:
    """The deciding log lines (summarised templates first), else the summary's templates."""
    hits = sorted(verdict.hits, key=lambda h: (-h.weight, h.index))
    chosen: list[Evidence] = []
    for hit in hits:
        if hit.index >= 0 and all(e.line != hit.line for e in chosen):
            chosen.append(Evidence(source=hit.source, line=hit.line[: rules.MAX_LINE_CHARS]))
    if not chosen:
        chosen = [Evidence(source=s, line=line[: rules.MAX_LINE_CHARS]) for s, line in pairs[:3]]
    return chosen[:3]
