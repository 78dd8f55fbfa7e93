"""Alertmanager as an incident source: its webhook payload (version 4) turned into incidents.

A firing alert opens (or bumps) the incident of the target its labels name; the same alert
resolved resolves it. Alert text (annotations, URLs) is untrusted: it is kept, redacted, as
evidence in the incident's detail and never decides what OpsMedic does. Only labels choose
the target, and a mapped target is healed like any other incident, under the same policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_server.core.targets import Target
from mcp_server.deps import Deps
from mcp_server.errors import InvalidInput, OpsMedicError
from mcp_server.models import Incident, IncidentStatus, Severity, TimelineEntry

MAX_ALERTS = 1000
MAX_TEXT = 2000  # per annotation / URL kept as evidence
EVIDENCE = ("summary", "description", "runbook_url")
ACTOR = "alertmanager"
RESOLVED_TEXT = "resolved by Alertmanager"
Labels = dict[str, str]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Alert(_Payload):
    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL", max_length=MAX_TEXT * 4)
    fingerprint: str = Field(min_length=1, max_length=64)


class Notification(_Payload):
    """Alertmanager's webhook body (https://prometheus.io/docs/alerting/latest/configuration/
    #webhook_config), version 4."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", max_length=4096)
    status: Literal["firing", "resolved"]
    receiver: str = Field(max_length=256)
    group_labels: Labels = Field(alias="groupLabels")
    common_labels: Labels = Field(alias="commonLabels")
    common_annotations: Labels = Field(alias="commonAnnotations")
    external_url: str = Field(alias="externalURL", max_length=4096)
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")


def parse_notification(body: Any) -> Notification:
    """The payload, validated; InvalidInput naming the first problems when it is malformed."""
    try:
        return Notification.model_validate(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        raise InvalidInput(
            "not an Alertmanager webhook payload (version 4): " + "; ".join(problems)
        ) from None


def severity_of(labels: Labels) -> Severity:
    try:
        return Severity(labels.get("severity", "warning").strip().lower())
    except ValueError:
        return Severity.warning


def alert_name(labels: Labels) -> str:
    name = labels.get("alertname", "").strip() or "unnamed"
    return name[:200]


def map_target(labels: Labels, probes: Iterable[str] = ()) -> str:
    """The target an alert is about, from its labels only (see README, Alertmanager)."""
    explicit = labels.get("opsmedic_target", "").strip()
    if explicit:
        return str(Target.parse(explicit))  # InvalidInput when it is not kind:name
    for label, kind in (
        ("container", "container"),
        ("name", "container"),
        ("container_label_com_docker_swarm_service_name", "service"),
    ):
        if labels.get(label, "").strip():
            return _or_alert(f"{kind}:{labels[label].strip()}", labels)
    job = labels.get("job", "").strip()
    if job and labels.get("instance", "").strip() and job in set(probes):
        return f"probe:{job}"
    return _or_alert("", labels)


def _or_alert(text: str, labels: Labels) -> str:
    try:
        return str(Target.parse(text)) if text else f"alert:{alert_name(labels)}"
    except InvalidInput:
        return f"alert:{alert_name(labels)}"


class AlertIntake:
    """Applies one notification: incidents opened, bumped or resolved; one audit entry."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def accept(self, note: Notification, actor: str) -> dict[str, Any]:
        probes = [p.name for p in self.deps.settings.probes]
        targets = [map_target(a.labels, probes) for a in note.alerts]  # all valid, or nothing
        results = []
        for alert, target in zip(note.alerts, targets, strict=True):
            if alert.status == "firing":
                inc = await self._fire(note, alert, target)
                results.append({"fingerprint": alert.fingerprint, "target": target,
                                "incident_id": inc.id, "count": inc.count})  # fmt: skip
            else:
                done = await self._resolve(alert, target, actor)
                results.append({"fingerprint": alert.fingerprint, "target": target,
                                "resolved": done})  # fmt: skip
        await self.deps.auditor.record(
            actor=actor, transport="http", tool="alerts:alertmanager", outcome="ok",
            args={"receiver": note.receiver, "alert_group": note.group_key,
                  "status": note.status, "alerts": results[:50]},
            decision="incident source",
        )  # fmt: skip
        return {"accepted": len(results), "alerts": results}

    async def _fire(self, note: Notification, alert: Alert, target: str) -> Incident:
        name = alert_name(alert.labels)
        symptom = f"alert:{name}"
        prior = await self._active(target, symptom)
        seen = set(prior.detail.get("fingerprints", [])) if prior else set()
        detail = self._evidence(note, alert) | {"fingerprints": sorted(seen | {alert.fingerprint})}
        summary = alert.annotations.get("summary", "").strip()
        title = f"Alertmanager: {name}" + (f": {summary[:200]}" if summary else "")
        title = self.deps.redactor.redact_text(title)
        incidents = self.deps.services.incidents
        inc, created = await incidents.report(
            target, symptom, title, severity_of(alert.labels), detail
        )
        await self._heal(inc, created)
        return inc

    async def _heal(self, inc: Incident, created: bool) -> None:
        """A target that is down goes to the auto-healer (scope and policy decide, as for any
        incident). One that is up is left to a person: the healer restarts only what is down
        and would resolve the incident as "running again" while Alertmanager says it fires."""
        target = Target.parse(inc.target)
        services = self.deps.services
        if target.kind not in services.drivers.restartable:
            return
        try:
            state = await services.drivers.of(target).state(target.name)
        except OpsMedicError:
            state = None  # unknown: the healer looks for itself
        if state is None or not state.fine:
            services.autoheal.consider(inc)
        elif created:
            text = f"{target} is up ({state.detail}): not restarted; the alert is for a person"
            await services.incidents.note(inc.id, "note", text, ACTOR)

    async def _resolve(self, alert: Alert, target: str, actor: str) -> bool:
        inc = await self._active(target, f"alert:{alert_name(alert.labels)}")
        prints = list(inc.detail.get("fingerprints", [])) if inc else []
        if inc is None or alert.fingerprint not in prints:
            return False
        rest = [p for p in prints if p != alert.fingerprint]
        if rest:  # other alerts of the same name on this target still fire
            entry = TimelineEntry(actor=actor, kind="note", text=f"{RESOLVED_TEXT}: one alert")
            await self.deps.store.update_incident(inc.id, entry=entry,
                                                  detail={"fingerprints": rest})  # fmt: skip
            return False
        await self.deps.services.incidents.transition(
            inc.id, IncidentStatus.resolved, RESOLVED_TEXT, actor
        )
        return True

    async def _active(self, target: str, symptom: str) -> Incident | None:
        for inc in await self.deps.services.incidents.active_for(target):
            if inc.symptom == symptom:
                return inc
        return None

    def _evidence(self, note: Notification, alert: Alert) -> dict[str, Any]:
        """What Alertmanager said, as redacted, capped text: evidence, never instructions."""
        kept = {k: alert.annotations[k][:MAX_TEXT] for k in EVIDENCE if k in alert.annotations}
        evidence = {
            "source": "alertmanager",
            "fingerprint": alert.fingerprint,
            "alert_group": note.group_key[:1000],  # groupKey ("*key" names are redacted)
            "labels": {k[:100]: v[:500] for k, v in list(alert.labels.items())[:50]},
            "annotations": kept,
            "generator_url": alert.generator_url[:MAX_TEXT],
            "starts_at": alert.starts_at.isoformat(),
            "external_url": note.external_url[:MAX_TEXT],
        }
        redacted: dict[str, Any] = self.deps.redactor.redact(evidence)
        return redacted
