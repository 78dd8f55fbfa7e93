"""Rules RCA for an Alertmanager incident (symptom `alert:NAME`, detail.source alertmanager).

What the alert says (its summary, description, runbook and the generatorURL of the query that
fired) is *quoted* as evidence, redacted and cut, never scored: alert text comes from whoever
can reach Alertmanager, so it cannot pick the category, and with it restart_safe. The
category comes from the logs of the target the alert's labels mapped to (a container, a
process...), scored by the same rules as any incident; an alert that maps to no target
(`alert:NAME`) has no logs and stays `unknown`, for a person, with the query to open.
"""

from __future__ import annotations

from typing import Any

from mcp_server.models import Evidence

#: Annotations quoted, in this order, with the generator URL after them.
QUOTED = ("summary", "description", "runbook_url")
MAX_QUOTE = 500
ALERT_EVIDENCE = 4  # alert lines kept beside the log lines
UNTRUSTED = "alert text, untrusted"


def is_alert(incident: dict[str, Any]) -> bool:
    detail = incident.get("detail")
    return str(incident.get("symptom", "")).startswith("alert:") and (
        isinstance(detail, dict) and detail.get("source") == "alertmanager"
    )


def alert_name(incident: dict[str, Any]) -> str:
    return str(incident.get("symptom", "")).removeprefix("alert:") or "unnamed"


def without_alert_text(incident: dict[str, Any]) -> dict[str, Any]:
    """The incident as the scoring rules may see it: no annotations, no alert title."""
    kept = {
        k: v
        for k, v in _part(incident, "detail").items()
        if k in ("source", "fingerprint", "fingerprints")
    }
    return {**incident, "title": f"alert {alert_name(incident)}", "detail": kept}


def alert_evidence(incident: dict[str, Any]) -> list[Evidence]:
    """The alert's own words and query, one line each, with the alert as their source."""
    detail = _part(incident, "detail")
    notes = _part(detail, "annotations")
    source = f"alertmanager:{alert_name(incident)}"
    lines = [f"{key}: {notes[key]}" for key in QUOTED if str(notes.get(key, "")).strip()]
    url = str(detail.get("generator_url") or "").strip()
    if url:
        lines.append(f"generatorURL: {url}")
    labels = _part(detail, "labels")
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())[:12])
    if shown:
        lines.append(f"labels: {shown}")
    return [Evidence(source=source, line=_cut(line)) for line in lines[:ALERT_EVIDENCE]]


def alert_summary(incident: dict[str, Any], logs_summary: str, had_logs: bool) -> str:
    """Head for the RCA: which alert fires where, what it says (quoted), what the logs say."""
    target = str(incident.get("target") or "")
    name = alert_name(incident)
    severity = str(incident.get("severity") or "warning")
    count = incident.get("count") or 1
    notes = _part(_part(incident, "detail"), "annotations")
    said = str(notes.get("summary") or notes.get("description") or "").strip()
    head = f"Alertmanager alert {name} ({severity}) fires"
    head += f" on {target}" if not target.startswith("alert:") else ", mapped to no target"
    head += f", notified {count}x." if count != 1 else "."
    if said:
        head += f' It says: "{_cut(said, 200)}" ({UNTRUSTED}).'
    if target.startswith("alert:"):
        return head + " No logs to read: diagnose from the alert's query (generatorURL)."
    if not had_logs:
        return head + f" No log lines of {target} could be read."
    return f"{head} Logs of {target}: {logs_summary}"


def alert_recommendation(incident: dict[str, Any], logs_advice: str, category: str) -> str:
    target = str(incident.get("target") or "")
    notes = _part(_part(incident, "detail"), "annotations")
    steps = ["Open the alert's query (generatorURL) in Prometheus to see the series that fired"]
    if str(notes.get("runbook_url", "")).strip():
        steps.append("follow its runbook_url")
    if target.startswith("alert:"):
        steps.append(
            "find what its labels point at (instance, job, service) and inspect it; OpsMedic "
            "acts on no alert by itself"
        )
    elif category != "unknown":
        steps.append(logs_advice)
    else:
        steps.append(
            f"read more of {target} (tail_logs mode='summary', read_metrics); OpsMedic restarts "
            "it only if it is down, under policy, never because an alert says so"
        )
    return "; ".join(steps) + "."


def _part(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _cut(text: str, limit: int = MAX_QUOTE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " [...]"
