"""The /metrics series OpsMedic's own alert rules need (deploy/prometheus/opsmedic-rules.yml).

Fed by OpsMetrics (mcp_server.web.metrics) from the same incremental reads of the audit chain
and the event feed, plus this process's duties and the health score at scrape time:

- opsmedic_duty_up{duty}                        gauge 1/0: healthy and not waiting
- opsmedic_duty_last_progress_timestamp_seconds{duty}  Unix time of the duty's last progress
                                                (duty="reconcile": the last finished pass)
- opsmedic_escalations_total                    incidents escalated to a person
- opsmedic_restart_budget_exhausted_total       restarts refused because the budget is spent
- opsmedic_heal_failures_total                  heal actions that failed or raised
- opsmedic_action_refusals_total{type,rule,verdict}  refused actions by the policy rule
- opsmedic_health_score{target}                 0..100 per target, target="overall" overall

The unlabelled counters always exist (0 from the start), so `increase()` sees their first
step: a rule on them fires on the first escalation after Prometheus started scraping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from mcp_server.core.health_score import OVERALL, HealthScore, score_now
from mcp_server.deps import Deps
from mcp_server.models import AuditEntry, Event

FAILED = ("failed", "error")


class HealthMetrics:
    """Counters of OpsMedic's own health; `count_*` are called for each audit entry / event."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps
        self.escalations = 0
        self.budget_exhausted = 0
        self.heal_failures = 0
        self.refusals: Counter[tuple[str, str, str]] = Counter()
        self.score: HealthScore | None = None

    def count_audit(self, e: AuditEntry) -> None:
        if not e.tool.startswith("action:"):
            return
        kind = e.tool.removeprefix("action:")
        if e.outcome in FAILED:
            self.heal_failures += 1
        elif e.outcome == "refused":
            rule = str(e.args.get("rule") or "unknown")[:40]
            verdict = e.decision or "refused"
            self.refusals[(kind, rule, verdict)] += 1
            if rule == "budget" and verdict == "escalate":
                self.budget_exhausted += 1

    def count_event(self, e: Event) -> None:
        if e.type == "incident.status" and e.data.get("status") == "escalated":
            self.escalations += 1

    async def refresh(self) -> None:
        records = [v.as_json() for v in self._deps.duties.views()]
        self.score = await score_now(self._deps.store, records)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "opsmedic_duty_up", "1 when the duty is healthy and not waiting", labels=["duty"]
        )
        last = GaugeMetricFamily(
            "opsmedic_duty_last_progress_timestamp_seconds",
            "Unix time of the duty's last progress",
            labels=["duty"],
        )
        for view in self._deps.duties.views():
            up.add_metric([view.name], 1 if view.healthy and view.state != "waiting" else 0)
            if view.last_beat is not None:
                last.add_metric([view.name], view.last_beat.timestamp())
        yield up
        yield last
        for name, doc, value in (
            ("opsmedic_escalations", "Incidents escalated to a person", self.escalations),
            ("opsmedic_restart_budget_exhausted", "Restarts refused: budget spent",
             self.budget_exhausted),
            ("opsmedic_heal_failures", "Heal actions that failed", self.heal_failures),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        refusals = CounterMetricFamily(
            "opsmedic_action_refusals",
            "Actions refused by policy, by rule and verdict",
            labels=["type", "rule", "verdict"],
        )
        for key, n in sorted(self.refusals.items()):
            refusals.add_metric(list(key), n)
        yield refusals
        if self.score is not None:
            score = GaugeMetricFamily(
                "opsmedic_health_score", "Health 0-100 (README: Health score)", labels=["target"]
            )
            score.add_metric([OVERALL], self.score.overall)
            for target, value in sorted(self.score.targets.items()):
                score.add_metric([target], value)
            yield score
