"""Shared (de)serialisation for the store backends.

Every datetime is written as fixed-width ISO-8601 UTC text (``2026-01-02T03:04:05.000006Z``):
it sorts and compares correctly as a string, keeps microseconds, and parses back to the same
value, so an audit entry re-read from either backend reproduces the same canonical JSON and
its hash still verifies.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, TypeAdapter

from mcp_server.errors import InvalidInput, Unavailable
from mcp_server.models import (
    CLOSED_STATUSES,
    AuditDraft,
    AuditEntry,
    Incident,
    IncidentStatus,
    TimelineEntry,
)
from mcp_server.safety.audit_keys import AuditKeys
from mcp_server.store.base import ChainVerifier, audit_body, audit_hash, canonical_json

M = TypeVar("M", bound=BaseModel)

APPROVAL_STATUSES = frozenset({"pending", "approved", "denied", "expired", "used"})
#: Audit columns/fields in storage order (args is canonical JSON text in both backends).
AUDIT_FIELDS = tuple(AuditEntry.model_fields)


def as_utc(dt: datetime) -> datetime:
    """Aware UTC datetime; naive input is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def ts_text(dt: datetime) -> str:
    """Fixed-width UTC text that sorts like the instant it names."""
    return as_utc(dt).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _kinds(annotation: Any) -> list[Any]:
    return [annotation, *get_args(annotation)]


@cache
def json_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Names of fields holding dicts or lists (stored as JSON text in SQLite)."""
    return frozenset(
        name
        for name, info in cls.model_fields.items()
        if any(k in (dict, list) or get_origin(k) in (dict, list) for k in _kinds(info.annotation))
    )


@cache
def datetime_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(
        name for name, info in cls.model_fields.items() if datetime in _kinds(info.annotation)
    )


def to_fields(model: BaseModel, *, encode_json: bool) -> dict[str, Any]:
    """JSON-mode dump with datetimes as ts_text; dict/list fields as JSON text if asked."""
    data = model.model_dump(mode="json")
    cls = type(model)
    for name in datetime_fields(cls):
        value = getattr(model, name)
        if value is not None:
            data[name] = ts_text(value)
    if encode_json:
        for name in json_fields(cls):
            data[name] = canonical_json(data[name])
    return data


_DETAIL = TypeAdapter(dict[str, Any])


def plain(detail: dict[str, Any] | None) -> dict[str, Any]:
    """Detail in JSON form (datetimes as ISO text ...), as a model dump would store it."""
    return _DETAIL.dump_python(detail or {}, mode="json")


def from_fields(cls: type[M], data: dict[str, Any], *, decode_json: bool) -> M:
    """Inverse of to_fields; ignores storage-only keys such as Mongo's _id."""
    clean = {k: v for k, v in data.items() if k in cls.model_fields}
    if decode_json:
        for name in json_fields(cls):
            if isinstance(clean.get(name), str):
                clean[name] = json.loads(clean[name])
    return cls.model_validate(clean)


# --- audit -------------------------------------------------------------------------------


def chain_entry(
    draft: AuditDraft, seq: int, prev_hash: str, keys: AuditKeys | None = None
) -> AuditEntry:
    """The entry that follows prev_hash at seq, in the exact form a re-read produces;
    with `keys`, its hash is an HMAC under the current key (its id goes in the entry)."""
    fields = dict(draft)
    fields["ts"] = as_utc(draft.ts)
    if draft.duration_ms is not None and not math.isfinite(draft.duration_ms):
        fields["duration_ms"] = None  # NaN/inf would not survive a round trip through storage
    key_id = keys.current_id if keys is not None else None
    staged = AuditEntry(**fields, seq=seq, prev_hash=prev_hash, hash="", key_id=key_id)
    body = audit_body(staged)
    return AuditEntry.model_validate(
        {**body, "prev_hash": prev_hash, "hash": audit_hash(prev_hash, body, keys)}
    )


def audit_record(entry: AuditEntry) -> dict[str, Any]:
    """Storage form of an audit entry: ts as ts_text, args as canonical JSON text."""
    data = entry.model_dump(mode="json")
    data["ts"] = ts_text(entry.ts)
    data["args"] = canonical_json(data["args"])
    return data


def parse_audit(record: dict[str, Any]) -> AuditEntry:
    """Inverse of audit_record; raises ValueError (incl. pydantic's) on garbage."""
    data = {k: record.get(k) for k in AUDIT_FIELDS}
    args = data.get("args")
    data["args"] = json.loads(args) if isinstance(args, str | bytes) else args
    return AuditEntry.model_validate(data)


def parse_audit_records(records: Iterable[Mapping[str, Any]]) -> list[AuditEntry]:
    """Stored audit records as entries; one that cannot be read stops the read, loudly."""
    out = []
    for record in records:
        try:
            out.append(parse_audit(dict(record)))
        except (ValueError, TypeError) as exc:
            raise Unavailable(
                f"audit entry {record['seq']} cannot be read ({exc.__class__.__name__}); "
                "run `opsmedic audit verify` and restore the store from a backup"
            ) from exc
    return out


def feed_chain(
    verifier: ChainVerifier, batch: Sequence[Mapping[str, Any]], full: int
) -> int | None:
    """Feed one batch of stored records to the verifier; the last seq read when the batch
    was full (more may follow), else None (done, or the chain failed)."""
    for record in batch:
        try:
            entry = parse_audit(dict(record))
        except (ValueError, TypeError) as exc:
            verifier.unreadable(record["seq"], f"{exc.__class__.__name__}: {str(exc)[:200]}")
            return None
        if verifier.feed(entry) is not None:
            return None
    return int(batch[-1]["seq"]) if len(batch) == full else None


# --- incidents ---------------------------------------------------------------------------


def open_key(target: str, symptom: str) -> str:
    """Dedup key of a not-yet-resolved incident (NUL cannot occur in either part by accident)."""
    return f"{target}\x00{symptom}"


def is_closed(status: IncidentStatus | str) -> bool:
    return IncidentStatus(status) in CLOSED_STATUSES


def opened_entry(now: datetime, title: str, instance: str | None = None) -> TimelineEntry:
    return TimelineEntry(ts=as_utc(now), actor=instance or "opsmedic", kind="opened", text=title)


def repeat_entry(now: datetime, instance: str | None = None) -> TimelineEntry:
    """Timeline note for a repeat; the incident's count says how many times in all."""
    return TimelineEntry(
        ts=as_utc(now), actor=instance or "opsmedic", kind="repeat", text="seen again"
    )


def new_incident(
    incident_id: int,
    target: str,
    symptom: str,
    title: str,
    severity: str,
    detail: dict[str, Any] | None,
    now: datetime,
    instance: str | None = None,
) -> Incident:
    now = as_utc(now)
    return Incident(
        id=incident_id,
        target=target,
        symptom=symptom,
        title=title,
        severity=severity,  # type: ignore[arg-type]  # validated by pydantic
        opened_at=now,
        updated_at=now,
        last_seen_at=now,
        detail=dict(detail or {}),
        timeline=[opened_entry(now, title, instance)],
        instance=instance,
    )


def status_changes(
    old: IncidentStatus, new: IncidentStatus | None, now: datetime
) -> dict[str, Any]:
    """Field changes (python values) implied by a status update."""
    if new is None or new == old:
        return {}
    changes: dict[str, Any] = {"status": new}
    if is_closed(new):
        changes["resolved_at"] = as_utc(now)
    elif is_closed(old):
        changes["resolved_at"] = None
    return changes


def check_approval_status(status: str) -> None:
    if status not in APPROVAL_STATUSES or status == "pending":
        allowed = ", ".join(sorted(APPROVAL_STATUSES - {"pending"}))
        raise InvalidInput(f"approval status {status!r} is not a decision; use one of: {allowed}")
