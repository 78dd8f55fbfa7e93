"""Maintenance holds: a person who stops something on purpose says so.

A held target is still watched and shown (as held), but never healed. A hold comes from the
`hold` tool, `opsmedic hold`, or the label ``opsmedic.hold=true`` (optional
``opsmedic.hold.reason``) on the target itself. Stored holds expire by themselves; a label hold
lasts while the label is set. Every hold and release is audited and put on the event feed.

Pure apart from the store, the auditor and the bus: no Docker, no MCP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from mcp_server.core.events import EventBus
from mcp_server.core.targets import Target
from mcp_server.errors import InvalidInput, Unavailable
from mcp_server.models import Event, Hold
from mcp_server.safety.audit import Auditor
from mcp_server.store.base import Store

__all__ = [
    "HOLD_LABEL",
    "MAX_HOLD",
    "Hold",
    "Holds",
    "held_note",
    "hold_view",
    "is_active",
    "label_hold",
    "parse_until",
    "split_active",
]

logger = logging.getLogger(__name__)

HOLD_LABEL = "opsmedic.hold"
HOLD_REASON_LABEL = "opsmedic.hold.reason"
MAX_HOLD = timedelta(days=7)
MAX_REASON = 500
_TRUE = frozenset({"true", "1", "yes"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")
HoldSource = Literal["tool", "cli", "label"]
#: A clock gives aware datetimes, or epoch seconds like time.time (Deps.clock).
Clock = Callable[[], datetime | float]

UNTIL_HELP = (
    "write a duration like 90s, 30m, 2h or 1d (also 1h30m; at most 7d), "
    "or an ISO-8601 UTC time like 2026-12-02T08:00:00Z"
)


def parse_until(text: str, now: datetime, limit: timedelta = MAX_HOLD) -> datetime:
    """ "30m" / "2h" / "1d" / "90s" / "1h30m" or an ISO-8601 time -> the aware UTC end.
    InvalidInput (saying what to write) when malformed, not in the future, or beyond limit."""
    raw = text.strip().lower() if isinstance(text, str) else ""
    if _DURATION.fullmatch(raw):
        seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(raw))
        if seconds > limit.total_seconds():  # checked before timedelta() can overflow
            raise InvalidInput(f"a hold lasts at most {_span(limit)}; {UNTIL_HELP}")
        until = now + timedelta(seconds=seconds)
    else:
        until = _parse_time(text)
    if until <= now:
        raise InvalidInput(f"until {text!r} is not in the future; {UNTIL_HELP}")
    if until - now > limit:
        raise InvalidInput(
            f"until {text!r} is more than {_span(limit)} away; a hold lasts at most "
            f"{_span(limit)}: hold again later to extend it"
        )
    return until


def _parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(str(text).strip().replace("z", "Z"))
    except ValueError:
        why = f"until {str(text)[:40]!r} is not a duration or a time: {UNTIL_HELP}"
        raise InvalidInput(why) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _span(delta: timedelta) -> str:
    """The two largest units, in the notation `until` accepts: 30m, 1h30m, 6d23h, 59s."""
    left = int(delta.total_seconds())
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, left = divmod(left, _UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"


def is_active(hold: Hold, now: datetime) -> bool:
    """A stored hold counts until its end; a label hold (no end) while the label is set."""
    return hold.until is None or hold.until > now


def label_hold(target: Target, labels: Mapping[str, str] | None, now: datetime) -> Hold | None:
    """The hold a target's own labels declare (``opsmedic.hold=true``), else None."""
    if not labels or str(labels.get(HOLD_LABEL, "")).strip().lower() not in _TRUE:
        return None
    reason = str(labels.get(HOLD_REASON_LABEL) or "").strip()[:MAX_REASON]
    return Hold(
        target=str(target),
        reason=reason or f"label {HOLD_LABEL}=true",
        actor="label",
        created_at=now,
        until=None,
        source="label",
    )


def hold_view(hold: Hold, now: datetime) -> dict[str, Any]:
    """What tools, resources and the dashboard show of a hold (times as ISO-8601 UTC)."""
    view: dict[str, Any] = {
        "target": hold.target,
        "reason": hold.reason,
        "by": hold.actor,
        "source": hold.source,
        "since": _iso(hold.created_at),
        "until": _iso(hold.until) if hold.until else None,
    }
    if hold.until is not None:
        view["remaining"] = _span(max(hold.until - now, timedelta(0)))
    else:
        view["remaining"] = f"while label {HOLD_LABEL}=true is set"
    return view


def held_note(hold: Hold) -> str:
    """One short phrase, e.g. ``HELD until 2026-12-02T08:00Z by alice: db migration``."""
    when = f"until {hold.until:%Y-%m-%dT%H:%MZ}" if hold.until else f"by label {HOLD_LABEL}"
    by = f" by {hold.actor}" if hold.source != "label" else ""
    return f"HELD {when}{by}: {hold.reason[:60]}"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _as_datetime(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value, UTC)


def _new_hold(
    target: Target, reason: str, until: datetime, actor: str, source: HoldSource, now: datetime
) -> Hold:
    """A checked hold: a reason, an end in (now, now + MAX_HOLD], not a label's source."""
    why = reason.strip() if isinstance(reason, str) else ""
    if not why:
        raise InvalidInput("say why the target is held: reason, e.g. 'db migration'")
    end = _as_datetime(until).astimezone(UTC)
    if end <= now or end - now > MAX_HOLD:
        raise InvalidInput(f"a hold must end in the future, within {_span(MAX_HOLD)}")
    if source == "label":
        raise InvalidInput("label holds come from the target's labels, not from hold()")
    return Hold(
        target=str(target),
        reason=why[:MAX_REASON],
        actor=actor,
        created_at=now,
        until=end,
        source=source,
    )


class Holds:
    """Put targets on hold, release them, and answer "is this target held right now?"."""

    def __init__(
        self, store: Store, auditor: Auditor, bus: EventBus, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._auditor = auditor
        self._bus = bus
        self._clock: Clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return _as_datetime(self._clock())

    async def hold(
        self,
        target: Target,
        reason: str,
        until: datetime,
        actor: str,
        *,
        source: HoldSource = "tool",
    ) -> Hold:
        """Hold target until `until` (replacing any hold it has). Audited, then announced.
        InvalidInput for an empty reason or an end not in (now, now + 7 days]."""
        now = self.now()
        made = _new_hold(target, reason, until, actor, source, now)
        end = made.until or now
        await self._store.put_hold(made)
        args = {"reason": made.reason, "until": _iso(end), "source": source}
        try:
            await self._audit(made.target, actor, source, "hold:set", "ok", args)
        except Exception as exc:  # an unaudited hold would silently stop healing: undo it
            await self._store.delete_hold(made.target)
            raise Unavailable(
                f"{target} was not held: the audit log could not be written ({exc}); "
                "check the store (GET /healthz) and retry"
            ) from exc
        await self._publish("hold.set", made, now, hold_view(made, now))
        logger.info("%s held until %s by %s: %s", target, _iso(end), actor, made.reason)
        return made

    async def release(self, target: Target, actor: str, *, source: HoldSource = "tool") -> bool:
        """End the target's stored hold now. True when an active one was released.
        A label hold is not released here: it lasts while the target's label is set."""
        now = self.now()
        key = str(target)
        current = next((h for h in await self._store.list_holds() if h.target == key), None)
        removed = await self._store.delete_hold(key)
        released = removed and current is not None and is_active(current, now)
        args = {"source": source, "released": released}
        await self._audit(key, actor, source, "hold:release", "ok" if released else "noop", args)
        if released and current is not None:
            await self._publish("hold.released", current, now, {"by": actor})
            logger.info("%s released by %s", key, actor)
        return released

    async def active(
        self,
        target: Target,
        labels: Mapping[str, str] | None = None,
        now: datetime | None = None,
    ) -> Hold | None:
        """The hold in force for target: its stored unexpired hold, else the hold its labels
        declare (``opsmedic.hold=true``), else None. The healing engine asks this before acting."""
        when = now or self.now()
        key = str(target)
        for stored in await self._store.list_holds():
            if stored.target == key and is_active(stored, when):
                return stored
        return label_hold(target, labels, when)

    async def list_active(self, now: datetime | None = None) -> list[Hold]:
        """Every stored hold in force, by target. Expired ones are purged (and announced as
        ``hold.expired``) on the way; label holds are found with the targets' labels."""
        when = now or self.now()
        stored = await self._store.list_holds()
        if any(not is_active(h, when) for h in stored):
            await self._expire(when)
        return [h for h in stored if is_active(h, when)]

    async def by_target(self, now: datetime | None = None) -> dict[str, Hold]:
        """list_active as a map target -> hold: one store read for a whole listing."""
        return {h.target: h for h in await self.list_active(now)}

    async def _expire(self, now: datetime) -> None:
        try:
            for gone in await self._store.purge_holds(now):
                await self._publish("hold.expired", gone, now, {"by": "expiry"})
        except Exception:  # purging is housekeeping: readers ignore expired holds anyway
            logger.exception("purging expired holds failed")

    async def _audit(
        self, target: str, actor: str, source: str, tool: str, outcome: str, args: dict[str, Any]
    ) -> None:
        await self._auditor.record(
            actor=actor,
            transport="cli" if source == "cli" else "internal",
            tool=tool,
            args=args,
            target=target,
            decision="n/a",
            outcome=outcome,
        )

    async def _publish(self, kind: str, hold: Hold, now: datetime, data: dict[str, Any]) -> None:
        """Announce on the event feed; the id is stable for one change, so processes sharing
        a store that report the same expiry store one event."""
        stamp = _iso(hold.until) if kind == "hold.expired" and hold.until else now.isoformat()
        event = Event(
            id=f"{kind}:{hold.target}:{hold.created_at.isoformat()}:{stamp}",
            ts=now,
            source="hold",
            type=kind,
            target=hold.target,
            data={**data, "reason": hold.reason[:300]},
        )
        await self._bus.publish([event])


def split_active(holds: Iterable[Hold], now: datetime) -> list[Hold]:
    """The holds of `holds` still in force at `now` (for readers holding only a store)."""
    return [h for h in holds if is_active(h, now)]
