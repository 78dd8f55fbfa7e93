"""The bot-job event schema, the field mapping for other hubs, and frame parsing.

An event is one JSON object; a WebSocket frame holds one event or a JSON array of events:

    {"id": "evt-1842-0",            # required, str (or int): idempotency key, unique per hub
     "type": "started",             # required: started | heartbeat | log | finished | failed
     "job": "invoice-bot",          # required: the job's id; its target is job:invoice-bot
     "run": "1842",                 # required: the execution's id within the job
     "ts": "2026-01-02T03:04:05Z",  # required: ISO-8601 (no zone = UTC) or epoch seconds
     "bot": "worker-3",             # optional: who runs it
     "line": "charged 14 invoices", # log: required, the log line (cut at 4000 chars)
     "level": "error",              # log: optional (debug/info/warning/error/critical ...)
     "error": "SMTP timeout",       # failed: optional, why it failed (cut at 4000 chars)
     "timeout_s": 300}              # optional (started): no heartbeat for this long = stalled

Unknown fields are ignored. Another hub's payload is adapted without code by a field
mapping (our field -> dotted path in their object, e.g. {"id": "event_id", "type": "kind",
"job": "payload.job.name"}) plus a value map for types (e.g. {"job.begin": "started"}).
A malformed event becomes a `Rejection` with a reason; it never ends a connection.
Objects whose raw "type" is a control word (ack, pong, hello, welcome, command_result,
error) are protocol chatter, not events, and are skipped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

EventType = Literal["started", "heartbeat", "log", "finished", "failed"]
TYPES: frozenset[str] = frozenset({"started", "heartbeat", "log", "finished", "failed"})
FIELDS = ("id", "type", "job", "run", "ts", "bot", "line", "level", "error", "timeout_s")
CONTROL_TYPES = frozenset({"ack", "pong", "ping", "hello", "welcome", "command_result", "error"})

MAX_KEY = 256  # id, job, run, bot
MAX_TEXT = 4000  # line, error (longer text is cut, not rejected)
MAX_LEVEL = 32

#: JSON Schema (draft 2020-12) of one event in our own shape (before any field mapping).
EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "OpsMedic bot-job event",
    "type": "object",
    "required": ["id", "type", "job", "run", "ts"],
    "properties": {
        "id": {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_KEY},
        "type": {"enum": sorted(TYPES)},
        "job": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
        "run": {"type": ["string", "integer"], "minLength": 1, "maxLength": MAX_KEY},
        "ts": {"type": ["string", "number"], "description": "ISO-8601 or epoch seconds"},
        "bot": {"type": "string", "maxLength": MAX_KEY},
        "line": {"type": "string"},
        "level": {"type": "string", "maxLength": MAX_LEVEL},
        "error": {"type": "string"},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0},
    },
    "allOf": [{"if": {"properties": {"type": {"const": "log"}}}, "then": {"required": ["line"]}}],
}


@dataclass(frozen=True, slots=True)
class IngestEvent:
    """One valid event in our shape (see the module docstring)."""

    id: str
    type: str
    job: str
    run: str
    ts: datetime
    bot: str | None = None
    line: str | None = None
    level: str | None = None
    error: str | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one item of a frame was not accepted; index is its place in the frame."""

    reason: str
    id: str | None = None
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason}


@dataclass(frozen=True)
class FieldMapping:
    """Where each of our fields lives in another hub's payload, and how types translate."""

    paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, mapping: Mapping[str, str] | None = None, types: Mapping[str, str] | None = None
    ) -> FieldMapping:
        """mapping: our field -> dotted path ("payload.job.name"); types: theirs -> ours."""
        unknown = sorted(set(mapping or {}) - set(FIELDS))
        if unknown:
            raise ValueError(
                f"ingest mapping has unknown field(s) {unknown}; map only {', '.join(FIELDS)}"
            )
        bad = sorted(v for v in (types or {}).values() if v not in TYPES)
        if bad:
            raise ValueError(f"ingest type map targets {bad}; use one of {sorted(TYPES)}")
        paths = {k: tuple(v.split(".")) for k, v in (mapping or {}).items() if v and v != k}
        return cls(paths=paths, types=dict(types or {}))

    @property
    def identity(self) -> bool:
        return not self.paths and not self.types


IDENTITY = FieldMapping()


@dataclass
class FrameResult:
    """A decoded frame: valid events, rejections, and how many items it held."""

    events: list[IngestEvent] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    items: int = 0


def _lookup(raw: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for part in path:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _key(value: Any, name: str) -> str:
    """A required short identifier: non-empty str (ints allowed), printable characters only."""
    if type(value) is str and 0 < len(value) <= MAX_KEY and value.isprintable():
        return value  # the common case, checked with the cheapest tests first
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        got = "missing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
        raise ValueError(f"{name} must be a non-empty string, got {got}")
    raise ValueError(f"{name} must be at most {MAX_KEY} printable characters")


def _ts(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"ts {value!r} is not a usable epoch time") from None
    if not isinstance(value, str):
        raise ValueError("ts must be an ISO-8601 string or epoch seconds, got missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"ts {value[:40]!r} is not ISO-8601 (e.g. 2026-01-02T03:04:05Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(value: Any, name: str, cap: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value if len(value) <= cap else value[:cap] + "…"


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {value!r}")
    return float(value)


def _fields(raw: Mapping[str, Any], mapping: FieldMapping) -> Mapping[str, Any]:
    if mapping.identity:
        return raw  # read with .get(): absent fields are None
    out = {
        name: _lookup(raw, mapping.paths[name]) if name in mapping.paths else raw.get(name)
        for name in FIELDS
    }
    kind = out["type"]
    if isinstance(kind, str | int) and str(kind) in mapping.types:
        out["type"] = mapping.types[str(kind)]
    return out


def _build(f: Mapping[str, Any]) -> IngestEvent:
    get = f.get
    kind = get("type")
    if kind not in TYPES:
        raise ValueError(f"type {str(kind)[:40]!r} is not one of {', '.join(sorted(TYPES))}")
    ident, job, run = _key(get("id"), "id"), _key(get("job"), "job"), _key(get("run"), "run")
    ts = _ts(get("ts"))
    line = _text(get("line"), "line", MAX_TEXT)
    if kind == "log" and line is None:
        raise ValueError("a log event needs a line")
    bot, level, error, timeout = get("bot"), get("level"), get("error"), get("timeout_s")
    return IngestEvent(
        ident,
        kind,
        job,
        run,
        ts,
        None if bot is None else _key(bot, "bot"),
        line,
        None if level is None else _text(level, "level", MAX_LEVEL),
        None if error is None else _text(error, "error", MAX_TEXT),
        None if timeout is None else _timeout(timeout),
    )


def parse_event(
    raw: Any, mapping: FieldMapping = IDENTITY, index: int | None = None
) -> IngestEvent | Rejection:
    """Validate one decoded JSON value against the schema (after mapping)."""
    if not isinstance(raw, Mapping):
        return Rejection(f"an event must be a JSON object, got {type(raw).__name__}", None, index)
    fields = _fields(raw, mapping)
    try:
        return _build(fields)
    except ValueError as exc:
        found = fields.get("id")
        ident = str(found)[:MAX_KEY] if isinstance(found, str | int) and found != "" else None
        return Rejection(str(exc), ident, index)


def decode_frame(data: str | bytes) -> list[Any] | Rejection:
    """A frame's items: an array as is, one object as [object]; else a Rejection."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejection(f"frame is not valid JSON ({exc}); send one object or an array")
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    return Rejection(f"frame must be a JSON object or array, got {type(value).__name__}")


def is_control(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") in CONTROL_TYPES


def parse_items(items: Iterable[Any], mapping: FieldMapping = IDENTITY) -> FrameResult:
    """Parse decoded items into events and rejections; control objects are skipped."""
    result = FrameResult()
    for index, item in enumerate(items):
        result.items += 1
        if is_control(item):
            continue
        parsed = parse_event(item, mapping, index)
        if isinstance(parsed, Rejection):
            result.rejected.append(parsed)
        else:
            result.events.append(parsed)
    return result


def parse_frame(data: str | bytes, mapping: FieldMapping = IDENTITY) -> FrameResult:
    """decode_frame + parse_items."""
    items = decode_frame(data)
    if isinstance(items, Rejection):
        return FrameResult(rejected=[items], items=1)
    return parse_items(items, mapping)
