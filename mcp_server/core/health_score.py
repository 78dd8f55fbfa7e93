"""Health score, 0 to 100, per target and overall (README, "Health score").

A target starts at 100 and loses, floored at 0:

- per active incident (any status but resolved): critical 40, warning 20, info 5;
- per failing probe (its last check failed): 30, on `probe:NAME`;
- per host metric over its threshold (cpu, load, memory, swap, each disk): crit 25,
  warn 10, on `host`.

Overall: 100 when no target lost points; else the worst target's score minus 5 for every
other target below 100, floored at 0 (one down container: 60; it and two warnings: 50).

The inputs come from the store (active incidents) and from the duties of the live
instances (probe duties say whether their last check failed; the host-metrics duty carries
its last grading as facts), so `/metrics`, the dashboard and `opsmedic status` compute the
same number from the same records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_server.backends.probes import PROBE_FAILED
from mcp_server.core.incidents import ACTIVE
from mcp_server.store.base import Store

INCIDENT_PENALTY = {"critical": 40, "warning": 20, "info": 5}
PROBE_PENALTY = 30
HOST_PENALTY = {"crit": 25, "warn": 10}
OTHER_TARGET_PENALTY = 5
MAX_INCIDENTS = 2000  # active incidents read per score
OVERALL = "overall"  # the label value of the overall score (no target is named so)
HOST_DUTY = "host-metrics"
HOST_FACT = "host"  # the host-metrics duty's facts: {"host": {metric: status}}


@dataclass(frozen=True)
class HealthScore:
    overall: int
    targets: dict[str, int]  # every target that lost points, and every known probe / host
    reasons: dict[str, list[str]]  # target -> what cost points ("critical incident 12", ...)

    def as_json(self) -> dict[str, Any]:
        worst = sorted(self.targets.items(), key=lambda kv: (kv[1], kv[0]))
        return {
            "overall": self.overall,
            "targets": [
                {"target": t, "score": s, "reasons": self.reasons.get(t, [])[:10]} for t, s in worst
            ],
        }


def health_score(
    incidents: Iterable[Mapping[str, Any]],
    probes: Mapping[str, bool],
    host: Mapping[str, str],
) -> HealthScore:
    """The score. `incidents`: active ones as {target, severity, id}; `probes`: name -> failing;
    `host`: metric -> "ok" / "warn" / "crit" (the last grading; empty when unknown)."""
    lost: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}

    def take(target: str, points: int, why: str) -> None:
        lost[target] = lost.get(target, 0) + points
        if points:
            reasons.setdefault(target, []).append(why)

    for inc in incidents:
        severity = str(inc.get("severity", "warning"))
        points = INCIDENT_PENALTY.get(severity, INCIDENT_PENALTY["warning"])
        take(str(inc["target"]), points, f"{severity} incident {inc.get('id', '?')}")
    for name, failing in probes.items():
        take(f"probe:{name}", PROBE_PENALTY if failing else 0, "probe failing")
    for metric, status in host.items():
        take("host", HOST_PENALTY.get(status, 0), f"{metric} {status}")
    targets = {t: max(0, 100 - points) for t, points in lost.items()}
    below = sorted(s for s in targets.values() if s < 100)
    overall = 100 if not below else max(0, below[0] - OTHER_TARGET_PENALTY * (len(below) - 1))
    return HealthScore(overall, targets, reasons)


def inputs_from_duties(
    duties: Iterable[Mapping[str, Any]],
) -> tuple[dict[str, bool], dict[str, str]]:
    """(probes, host) from duty records as /healthz and heartbeats show them (as_json()).
    Several instances may report one probe: failing if any says so; the host grading of
    the worst report wins per metric."""
    probes: dict[str, bool] = {}
    host: dict[str, str] = {}
    rank = {"ok": 0, "warn": 1, "crit": 2}
    for duty in duties:
        name = str(duty.get("name", ""))
        if name.startswith("probe:") and duty.get("last_progress_age_s") is not None:
            probe = name.removeprefix("probe:")
            probes[probe] = probes.get(probe, False) or duty.get("detail") == PROBE_FAILED
        facts = duty.get("facts")
        if name == HOST_DUTY and isinstance(facts, Mapping):
            grading = facts.get(HOST_FACT)
            for metric, status in (grading or {}).items() if isinstance(grading, Mapping) else ():
                if rank.get(str(status), 0) >= rank.get(host.get(metric, "ok"), 0):
                    host[str(metric)] = str(status)
    return probes, host


async def score_now(store: Store, duty_records: Iterable[Mapping[str, Any]]) -> HealthScore:
    """The score from the store's active incidents and the given duty records."""
    active = await store.list_incidents(ACTIVE, limit=MAX_INCIDENTS)
    rows = [{"target": i.target, "severity": i.severity.value, "id": i.id} for i in active]
    probes, host = inputs_from_duties(duty_records)
    return health_score(rows, probes, host)
