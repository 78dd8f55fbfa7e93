"""Incident lifecycle on top of the store: open/dedupe, transitions, notes, and their events.

Every change also goes onto the event feed, so `wait_for_events` callers see it live.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp_server.core.events import EventBus
from mcp_server.models import (
    CLOSED_STATUSES,
    Event,
    Incident,
    IncidentStatus,
    Severity,
    TimelineEntry,
)
from mcp_server.store.base import Store

logger = logging.getLogger(__name__)

ACTIVE = [s for s in IncidentStatus if s not in CLOSED_STATUSES]


def incident_row(inc: Incident) -> dict[str, Any]:
    """The compact view of an incident used in lists (tools, resources, events)."""
    return {
        "id": inc.id,
        "target": inc.target,
        "symptom": inc.symptom,
        "status": inc.status.value,
        "severity": inc.severity.value,
        "count": inc.count,
        "title": inc.title[:120],
        "updated_at": inc.updated_at.isoformat(timespec="seconds"),
        "instance": inc.instance,
    }


class Incidents:
    def __init__(self, store: Store, bus: EventBus, instance: str | None = None) -> None:
        self._store = store
        self._bus = bus
        self.instance = instance  # the OpsMedic that saw what it reports (None: unnamed)

    async def report(
        self,
        target: str,
        symptom: str,
        title: str,
        severity: Severity = Severity.warning,
        detail: dict[str, Any] | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident for target+symptom, or count a repeat of the open one."""
        inc, created = await self._store.open_incident(
            target, symptom, title, severity, detail, instance=self.instance
        )
        kind = "incident.opened" if created else "incident.repeat"
        seen = {"symptom": symptom, "count": inc.count, "title": title, "by": self.instance}
        await self._publish(inc, kind, seen)
        if created:
            logger.warning("incident %s opened: %s %s", inc.id, target, symptom)
        return inc, created

    async def transition(
        self, incident_id: int, status: IncidentStatus, text: str, actor: str = "opsmedic"
    ) -> Incident:
        entry = TimelineEntry(actor=actor, kind="status", text=f"{status.value}: {text}")
        inc = await self._store.update_incident(incident_id, status=status, entry=entry)
        await self._publish(inc, "incident.status", {"status": status.value, "text": text})
        return inc

    async def note(
        self, incident_id: int, kind: str, text: str, actor: str = "opsmedic"
    ) -> Incident:
        entry = TimelineEntry(actor=actor, kind=kind, text=text)
        inc = await self._store.update_incident(incident_id, entry=entry)
        await self._publish(inc, f"incident.{kind}", {"text": text[:300]})
        return inc

    async def active_for(self, target: str) -> list[Incident]:
        rows = await self._store.list_incidents(ACTIVE, limit=200)
        return [i for i in rows if i.target == target]

    async def resolve_target(self, target: str, text: str, actor: str = "opsmedic") -> int:
        """Resolve every active incident of a target (e.g. it is healthy again)."""
        resolved = 0
        for inc in await self.active_for(target):
            await self.transition(inc.id, IncidentStatus.resolved, text, actor)
            resolved += 1
        return resolved

    async def _publish(self, inc: Incident, kind: str, data: dict[str, Any]) -> None:
        stamp = f"{inc.updated_at.timestamp():.6f}"
        event = Event(
            id=f"{kind}:{inc.id}:{inc.count}:{stamp}",
            source="incident",
            type=kind,
            target=inc.target,
            incident_id=inc.id,
            data={**data, "status": inc.status.value, "severity": inc.severity.value},
        )
        await self._bus.publish([event])
