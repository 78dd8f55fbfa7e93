"""Tell people: incident alerts and monitor results, through the server's send_email tool.

Mail is optional: when the server has no SMTP configured, send_email says so and the runner
records that on the incident instead of failing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_runner.runner import Runner

logger = logging.getLogger(__name__)

NOTIFY_ON = {
    "alert_only": {"alert"},
    "warn_and_alert": {"warn", "alert"},
    "all": {"ok", "warn", "alert"},
}
OUTCOME_TEXT = {
    "restarted": "OpsMedic restarted it and verified it is running.",
    "restart_failed": "OpsMedic restarted it, but it did not stay up.",
    "refused": "Policy refused a restart (see the timeline for why).",
    "escalated": "Escalated to a person: a restart would not fix this.",
    "would_restart": "Check mode: a restart would be attempted in heal mode; nothing was changed.",
    "interrupted": "A restart was interrupted; its result is unknown.",
    "none": "No automatic action applies to this target.",
    "recovered": "It is running again by itself (or was started by someone); nothing was done.",
    "awaiting_approval": "A restart needs a person's approval; the approvers were asked by email.",
}


async def notify_incident(
    runner: Runner, inc: dict[str, Any], rca: dict[str, Any], action: str
) -> None:
    body = "\n".join(
        [
            f"{inc['title']}",
            f"Target: {inc['target']}   Symptom: {inc['symptom']}   Seen: {inc['count']}x",
            "",
            f"Diagnosis ({rca.get('category')}, confidence {rca.get('confidence')}):",
            str(rca.get("summary", "")),
            "",
            f"Recommendation: {rca.get('recommendation', '')}",
            "",
            f"What happened next: {OUTCOME_TEXT.get(action, action)}",
        ]
    )
    ok, out = await runner.call(
        "send_email",
        subject=f"{inc['target']} {inc['symptom']}: {OUTCOME_TEXT.get(action, action)[:60]}",
        body=body,
        incident_id=inc["id"],
    )
    if not ok:
        logger.info("alert for incident %s not mailed: %s", inc["id"], out)


async def notify_monitor(runner: Runner, name: str, out: dict[str, Any]) -> None:
    verdict = out["verdict"]
    notify_on = out.get("notify_on", "alert_only")
    if verdict not in NOTIFY_ON.get(notify_on, {"alert"}):
        return
    evidence = "\n".join(out.get("evidence", [])[-40:])
    ok, res = await runner.call(
        "send_email",
        subject=f"monitor {name}: {verdict.upper()}",
        body=f"Monitor {name} finished with verdict {verdict}.\n\nEvidence:\n{evidence}",
    )
    if not ok:
        logger.info("monitor %s result not mailed: %s", name, res)
