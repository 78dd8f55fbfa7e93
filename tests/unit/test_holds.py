"""Maintenance holds: duration parsing and the Holds service on a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mcp_server.core.events import EventBus
from mcp_server.core.holds import Holds, held_note, hold_view, parse_until
from mcp_server.core.targets import Target
from mcp_server.errors import InvalidInput
from mcp_server.models import Hold
from mcp_server.safety.audit import Auditor
from mcp_server.safety.redaction import Redactor
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import ManualClock

T0 = datetime(2026, 12, 2, 6, 0, 0, tzinfo=UTC)
WEB = Target("container", "web")


# --- parse_until ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
    ],
)
def test_durations(text: str, delta: timedelta) -> None:
    assert parse_until(text, T0) == T0 + delta


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-02T08:00:00Z", datetime(2026, 12, 2, 8, tzinfo=UTC)),
        ("2026-12-02T08:00:00+00:00", datetime(2026, 12, 2, 8, tzinfo=UTC)),
        ("2026-12-02T09:00:00+01:00", datetime(2026, 12, 2, 8, tzinfo=UTC)),
        ("2026-12-02T08:00", datetime(2026, 12, 2, 8, tzinfo=UTC)),  # naive is taken as UTC
    ],
)
def test_iso_times(text: str, expected: datetime) -> None:
    assert parse_until(text, T0) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("soon", "30m"),
        ("30 minutes", "30m"),
        ("-5m", "30m"),
        ("", "30m"),
        ("0s", "not in the future"),
        ("2026-12-02T05:00:00Z", "not in the future"),
        ("8d", "at most 7d"),
        ("99999999999999999999d", "at most 7d"),
        ("2026-12-20T00:00:00Z", "at most 7d"),
    ],
)
def test_bad_until_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says) as err:
        parse_until(text, T0)
    assert "2h" in str(err.value) or "7d" in str(err.value)


# --- the service ---------------------------------------------------------------------------


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def holds(store: SqliteStore, clock: ManualClock) -> Holds:
    return Holds(store, Auditor(store, Redactor()), EventBus(store), clock)


async def test_hold_is_active_until_it_expires(holds: Holds, clock: ManualClock) -> None:
    made = await holds.hold(WEB, "db migration", T0 + timedelta(minutes=30), "alice")
    assert (made.target, made.until, made.source) == (
        "container:web",
        T0 + timedelta(minutes=30),
        "tool",
    )
    assert await holds.active(WEB) == made
    assert await holds.active(Target("container", "api")) is None
    clock.now += timedelta(minutes=29, seconds=59)
    assert await holds.active(WEB) == made
    clock.now += timedelta(seconds=1)
    assert await holds.active(WEB) is None
    assert await holds.active(WEB, now=T0) == made  # the caller's "now" wins


async def test_list_active_purges_and_announces_expired(
    holds: Holds, store: SqliteStore, clock: ManualClock
) -> None:
    await holds.hold(WEB, "short", T0 + timedelta(minutes=1), "alice")
    await holds.hold(Target("process", "worker"), "long", T0 + timedelta(hours=1), "bob")
    assert [h.target for h in await holds.list_active()] == ["container:web", "process:worker"]
    clock.now += timedelta(minutes=5)
    assert [h.target for h in await holds.list_active()] == ["process:worker"]
    assert [h.target for h in await store.list_holds()] == ["process:worker"]  # purged
    types = [(e.type, e.target) for e in await store.events_after(0)]
    assert types[-1] == ("hold.expired", "container:web")


def test_remaining_is_written_like_until() -> None:
    made = Hold(target="container:web", reason="r", actor="a", created_at=T0, until=T0)
    for delta, text in [
        (timedelta(minutes=30), "30m"),
        (timedelta(minutes=29, seconds=59), "29m59s"),
        (timedelta(days=6, hours=23, minutes=59), "6d23h"),
        (timedelta(0), "0s"),
    ]:
        assert hold_view(made.model_copy(update={"until": T0 + delta}), T0)["remaining"] == text


async def test_hold_again_replaces(holds: Holds) -> None:
    await holds.hold(WEB, "first", T0 + timedelta(minutes=5), "alice")
    again = await holds.hold(WEB, "second", T0 + timedelta(hours=2), "bob")
    assert await holds.list_active() == [again]


async def test_release_ends_it_and_says_so(holds: Holds, clock: ManualClock) -> None:
    await holds.hold(WEB, "db migration", T0 + timedelta(minutes=30), "alice")
    clock.now += timedelta(minutes=1)
    assert await holds.release(WEB, "bob") is True
    assert await holds.active(WEB) is None
    assert await holds.release(WEB, "bob") is False  # nothing left to release


async def test_release_of_an_expired_hold_is_not_a_release(
    holds: Holds, clock: ManualClock
) -> None:
    await holds.hold(WEB, "db migration", T0 + timedelta(minutes=1), "alice")
    clock.now += timedelta(minutes=2)
    assert await holds.release(WEB, "bob") is False


async def test_label_hold_has_no_expiry_and_a_reason(holds: Holds, clock: ManualClock) -> None:
    labels = {"opsmedic.hold": "true", "opsmedic.hold.reason": "disk swap"}
    held = await holds.active(WEB, labels)
    assert held is not None
    assert (held.source, held.until, held.reason, held.actor) == (
        "label",
        None,
        "disk swap",
        "label",
    )
    assert await holds.active(WEB, {"opsmedic.hold": "TRUE"}) is not None
    plain = await holds.active(WEB, {"opsmedic.hold": "true"})
    assert plain is not None and plain.reason == "label opsmedic.hold=true"
    assert await holds.active(WEB, {"opsmedic.hold": "false"}) is None
    assert await holds.active(WEB, {"opsmedic.managed": "true"}) is None
    clock.now += timedelta(days=30)
    assert await holds.active(WEB, labels) is not None
    assert await holds.release(WEB, "bob") is False  # a label hold ends with its label
    assert "while label" in hold_view(held, clock.now)["remaining"]
    assert held_note(held).startswith("HELD by label")


async def test_a_stored_hold_is_preferred_over_the_label(holds: Holds) -> None:
    made = await holds.hold(WEB, "db migration", T0 + timedelta(minutes=30), "alice")
    assert await holds.active(WEB, {"opsmedic.hold": "true"}) == made


async def test_hold_and_release_are_audited_and_on_the_feed(
    holds: Holds, store: SqliteStore, clock: ManualClock
) -> None:
    await holds.hold(WEB, "db migration", T0 + timedelta(minutes=30), "cli:alice", source="cli")
    await holds.release(WEB, "bob")
    await holds.release(WEB, "bob")
    entries = await store.audit_entries()
    assert [(e.tool, e.actor, e.outcome, e.target) for e in entries] == [
        ("hold:set", "cli:alice", "ok", "container:web"),
        ("hold:release", "bob", "ok", "container:web"),
        ("hold:release", "bob", "noop", "container:web"),
    ]
    assert entries[0].transport == "cli" and entries[0].args["until"] == "2026-12-02T06:30:00Z"
    assert entries[0].args["reason"] == "db migration"
    assert (await store.verify_audit()).ok
    events = await store.events_after(0)
    assert [(e.type, e.source, e.target) for e in events] == [
        ("hold.set", "hold", "container:web"),
        ("hold.released", "hold", "container:web"),
    ]
    assert events[0].data["until"] == "2026-12-02T06:30:00Z" and events[1].data["by"] == "bob"


@pytest.mark.parametrize(
    ("reason", "minutes", "says"),
    [("  ", 30, "say why"), ("x", 0, "future"), ("x", -5, "future"), ("x", 7 * 1440 + 1, "7d")],
)
async def test_bad_holds_are_refused(holds: Holds, reason: str, minutes: int, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        await holds.hold(WEB, reason, T0 + timedelta(minutes=minutes), "alice")
    assert await holds.list_active() == []


async def test_epoch_seconds_clock_works_too(store: SqliteStore) -> None:
    service = Holds(store, Auditor(store, Redactor()), EventBus(store), lambda: T0.timestamp())
    assert service.now() == T0
    await service.hold(WEB, "db migration", T0 + timedelta(minutes=1), "alice")
    assert await service.active(WEB) is not None


async def test_unaudited_hold_is_undone(store: SqliteStore, clock: ManualClock) -> None:
    class BrokenAuditor(Auditor):
        async def record(self, **_kw: object) -> object:  # type: ignore[override]
            raise OSError("disk full")

    service = Holds(store, BrokenAuditor(store, Redactor()), EventBus(store), clock)
    with pytest.raises(Exception, match="not held: the audit log"):
        await service.hold(WEB, "db migration", T0 + timedelta(minutes=5), "alice")
    assert await store.list_holds() == []
