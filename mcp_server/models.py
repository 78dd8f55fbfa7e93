"""Pydantic models every layer shares. No imports from the rest of OpsMedic."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- incidents -------------------------------------------------------------------------


class IncidentStatus(StrEnum):
    open = "open"
    diagnosing = "diagnosing"
    awaiting_approval = "awaiting_approval"
    healing = "healing"
    verifying = "verifying"
    resolved = "resolved"
    escalated = "escalated"


#: Statuses after which a new failure of the same target+symptom opens a fresh incident.
CLOSED_STATUSES = frozenset({IncidentStatus.resolved})


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"


class TimelineEntry(_Model):
    ts: datetime = Field(default_factory=utcnow)
    actor: str = "opsmedic"
    kind: str  # opened, repeat, status, note, rca, action, verify, mail ...
    text: str


class Incident(_Model):
    id: int
    target: str  # kind:name, e.g. container:web
    symptom: str  # died, oom, unhealthy, probe_failed, stalled, ...
    title: str
    severity: Severity = Severity.warning
    status: IncidentStatus = IncidentStatus.open
    count: int = 1
    opened_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    resolved_at: datetime | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    timeline: list[TimelineEntry] = Field(default_factory=list)
    #: the OpsMedic instance (OPSMEDIC_INSTANCE) that saw it first; None: written before fleets
    instance: str | None = None


RcaCategory = Literal[
    "oom", "config", "dependency", "resource", "permission", "port_conflict", "code", "unknown"
]


class Evidence(_Model):
    source: str  # e.g. container:web, file:/var/log/app.log
    line: str


class Rca(_Model):
    incident_id: int
    summary: str
    category: RcaCategory = "unknown"
    evidence: list[Evidence] = Field(default_factory=list)
    recommendation: str = ""
    restart_safe: bool = False
    confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    author: str = "rules"
    created_at: datetime = Field(default_factory=utcnow)


# --- jobs, runs, events ----------------------------------------------------------------


class Job(_Model):
    id: str
    bot: str = ""
    status: str = "unknown"  # running / ok / failed / stalled / unknown
    last_heartbeat: datetime | None = None
    last_run_id: str | None = None
    timeout_s: float | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    meta: dict[str, Any] = Field(default_factory=dict)


class Run(_Model):
    id: str
    kind: Literal["job", "monitor", "action"] = "job"
    subject: str  # job id, monitor name or action target
    status: str = "running"  # running / ok / failed / warn / alert / interrupted
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = None
    verdict: str | None = None
    log: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


class Event(_Model):
    """Something that happened: an ingest event, a detection, an incident change."""

    seq: int | None = None  # assigned by the store; the long-poll cursor
    id: str  # idempotency key
    ts: datetime = Field(default_factory=utcnow)
    source: str  # docker, process, probe, ingest, incident, ...
    type: str
    target: str | None = None
    incident_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


# --- audit -----------------------------------------------------------------------------


class AuditEntry(_Model):
    seq: int
    ts: datetime
    actor: str
    transport: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    target: str | None = None
    decision: str | None = None  # allowed / refused / n/a
    outcome: str  # ok / error / refused / note
    duration_ms: float | None = None
    incident_id: int | None = None
    prev_hash: str
    hash: str
    key_id: str | None = None  # the HMAC key of `hash`; None: an unkeyed (pre-HMAC) entry
    #: the OpsMedic instance that wrote it; None (not hashed): written before fleets
    instance: str | None = None


class AuditDraft(_Model):
    """An audit entry before the store gives it seq, prev_hash and hash."""

    ts: datetime = Field(default_factory=utcnow)
    actor: str
    transport: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    target: str | None = None
    decision: str | None = None
    outcome: str
    duration_ms: float | None = None
    incident_id: int | None = None
    instance: str | None = None


class AuditVerdict(_Model):
    ok: bool
    checked: int
    bad_seq: int | None = None
    reason: str | None = None


# --- people ----------------------------------------------------------------------------


class Approval(_Model):
    id: str  # nonce
    incident_id: int | None
    action_hash: str
    action: dict[str, Any] = Field(default_factory=dict)
    approver: str
    expires_at: datetime
    status: Literal["pending", "approved", "denied", "expired", "used"] = "pending"
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None
    via: str | None = None  # email / elicitation


class Message(_Model):
    """An outgoing mail in the outbox, a processed incoming one, or a webhook delivery
    ("hook": `to` is [channel name], `body_text` the JSON body, see backends/webhooks)."""

    id: str  # idempotency key (outgoing) or Message-ID (incoming)
    direction: Literal["out", "in", "hook"] = "out"
    incident_id: int | None = None
    to: list[str] = Field(default_factory=list)
    subject: str = ""
    body_text: str = ""
    body_html: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    status: Literal["queued", "sent", "failed", "processed"] = "queued"
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow)
    last_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    sent_at: datetime | None = None


# --- holds -----------------------------------------------------------------------------


class Hold(_Model):
    """A person's word that a target is down on purpose: watched and shown, never healed.

    Lives in this module (not mcp_server.core.holds, which re-exports it) so the store
    can persist it without importing the domain layer."""

    target: str  # kind:name, e.g. container:web
    reason: str
    actor: str  # who put it on hold (tool caller, cli:<user>, or "label")
    created_at: datetime = Field(default_factory=utcnow)
    until: datetime | None = None  # None only for a label hold: it lasts while the label is set
    source: Literal["tool", "cli", "label"] = "tool"


# --- live instances --------------------------------------------------------------------


class Heartbeat(_Model):
    """The latest write of one running OpsMedic (keyed by its lease holder id): the store's
    write probe, and how `opsmedic status` finds live instances and their duties."""

    holder: str
    ts: datetime
    version: str = ""
    mode: str = ""
    healthy: bool = True
    instance: str = ""  # OPSMEDIC_INSTANCE: the name a fleet knows this OpsMedic by
    stopped: bool = False  # its last write, on a clean stop: silence after it is no incident
    #: name -> {state, detail, interval_s, last_progress_age_s, healthy} when written
    duties: dict[str, dict[str, Any]] = Field(default_factory=dict)
