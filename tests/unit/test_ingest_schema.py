"""The ingest event schema, field mapping, frame parsing, backoff, token bucket, feed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from mcp_server.backends.ingest.build import (
    EVENT_SCHEMA,
    TYPES,
    FieldMapping,
    IngestEvent,
    Rejection,
    TokenBucket,
    backoff_delay,
    mapping_from,
    parse_event,
    parse_frame,
)
from mcp_server.backends.ingest.client import redact_url, with_query
from mcp_server.backends.ingest.feed import Feed
from mcp_server.backends.ingest.server import origin_allowed
from mcp_server.errors import ConfigError
from mcp_server.settings import IngestSettings, load_settings

GOOD = {
    "id": "e1",
    "type": "started",
    "job": "invoice-bot",
    "run": "7",
    "ts": "2026-01-02T03:04:05Z",
}


def test_valid_event_parses_with_utc_time() -> None:
    ev = parse_event({**GOOD, "bot": "w1", "timeout_s": 30, "extra": {"ignored": True}})
    assert isinstance(ev, IngestEvent)
    assert (ev.id, ev.type, ev.job, ev.run, ev.bot) == ("e1", "started", "invoice-bot", "7", "w1")
    assert ev.ts == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert ev.timeout_s == 30.0


def test_integer_ids_epoch_and_naive_times_are_accepted() -> None:
    ev = parse_event({**GOOD, "id": 17, "run": 3, "ts": 1767323045})
    assert isinstance(ev, IngestEvent)
    assert (ev.id, ev.run) == ("17", "3")
    assert ev.ts.tzinfo is not None
    naive = parse_event({**GOOD, "ts": "2026-01-02T03:04:05"})
    assert isinstance(naive, IngestEvent) and naive.ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    offset = parse_event({**GOOD, "ts": "2026-01-02T05:04:05+02:00"})
    assert isinstance(offset, IngestEvent) and offset.ts.hour == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": None}, "id must be a non-empty string"),
        ({"id": ""}, "id must be a non-empty string"),
        ({"id": True}, "id must be a non-empty string"),
        ({"type": "exploded"}, "type 'exploded' is not one of"),
        ({"job": None}, "job must be a non-empty string"),
        ({"job": "a\nb"}, "printable"),
        ({"job": "x" * 300}, "at most 256"),
        ({"run": []}, "run must be a non-empty string"),
        ({"ts": None}, "ts must be an ISO-8601"),
        ({"ts": "yesterday"}, "not ISO-8601"),
        ({"ts": 1e20}, "not a usable epoch"),
        ({"timeout_s": -1}, "timeout_s must be a positive"),
        ({"timeout_s": "30"}, "timeout_s must be a positive"),
        ({"type": "log"}, "a log event needs a line"),
        ({"type": "log", "line": 5}, "line must be a string"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(change: dict, reason: str) -> None:
    got = parse_event({**GOOD, **change}, index=4)
    assert isinstance(got, Rejection), got
    assert reason in got.reason
    assert got.index == 4


def test_rejection_keeps_the_id_when_there_is_one() -> None:
    got = parse_event({**GOOD, "type": "nope"})
    assert isinstance(got, Rejection) and got.id == "e1"
    assert parse_event([1, 2]) == Rejection("an event must be a JSON object, got list", None, None)


def test_long_text_is_cut_not_rejected() -> None:
    ev = parse_event({**GOOD, "type": "failed", "error": "E" * 10_000})
    assert isinstance(ev, IngestEvent) and ev.error is not None
    assert len(ev.error) == 4001 and ev.error.endswith("…")


def test_mapping_adapts_another_hubs_payload() -> None:
    mapping = FieldMapping.build(
        {
            "id": "event_id",
            "type": "kind",
            "job": "payload.job.name",
            "run": "payload.execution",
            "ts": "at",
            "line": "payload.lines.0",
        },
        {"job.begin": "started", "job.output": "log"},
    )
    raw = {
        "event_id": "x-1",
        "kind": "job.output",
        "at": "2026-01-02T03:04:05Z",
        "payload": {"job": {"name": "etl"}, "execution": 99, "lines": ["loaded 5 rows"]},
    }
    ev = parse_event(raw, mapping)
    assert isinstance(ev, IngestEvent)
    assert (ev.id, ev.type, ev.job, ev.run, ev.line) == ("x-1", "log", "etl", "99", "loaded 5 rows")
    missing = parse_event({**raw, "payload": {}}, mapping)
    assert isinstance(missing, Rejection) and "job" in missing.reason


def test_mapping_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        FieldMapping.build({"jobname": "x"})
    with pytest.raises(ValueError, match="type map targets"):
        FieldMapping.build({}, {"go": "launched"})
    with pytest.raises(ConfigError, match="MAPPING"):
        mapping_from(IngestSettings(mapping={"nope": "x"}))


def test_mapping_comes_from_env_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSMEDIC_INGEST__MAPPING", '{"id": "event_id", "job": "payload.job"}')
    monkeypatch.setenv("OPSMEDIC_INGEST__TYPE_MAP", '{"begin": "started"}')
    monkeypatch.setenv("OPSMEDIC_INGEST__ALLOWED_ORIGINS", "https://a.example, https://b.example")
    settings = load_settings()
    assert settings.ingest.mapping == {"id": "event_id", "job": "payload.job"}
    assert mapping_from(settings.ingest).types == {"begin": "started"}
    assert settings.ingest.allowed_origins == ["https://a.example", "https://b.example"]


def test_frames_hold_one_event_or_an_array() -> None:
    one = parse_frame(json.dumps(GOOD))
    assert len(one.events) == 1 and not one.rejected
    many = parse_frame(json.dumps([GOOD, {**GOOD, "id": "e2"}, {"type": "ack"}, "junk"]))
    assert [e.id for e in many.events] == ["e1", "e2"]
    assert [r.index for r in many.rejected] == [3]  # the ack is protocol chatter, skipped
    assert many.items == 4
    bad = parse_frame("{not json")
    assert len(bad.rejected) == 1 and "not valid JSON" in bad.rejected[0].reason
    scalar = parse_frame("42")
    assert "object or array" in scalar.rejected[0].reason


def test_schema_documents_every_field() -> None:
    assert set(EVENT_SCHEMA["required"]) == {"id", "type", "job", "run", "ts"}
    assert set(EVENT_SCHEMA["properties"]["type"]["enum"]) == TYPES
    assert {"bot", "line", "level", "error", "timeout_s"} <= set(EVENT_SCHEMA["properties"])


def test_backoff_grows_with_jitter_and_caps() -> None:
    assert backoff_delay(0, 0.5, 30, rand=lambda: 0.0) == 0.25
    assert backoff_delay(0, 0.5, 30, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30, rand=lambda: 1.0) == 4.0
    assert backoff_delay(50, 0.5, 30, rand=lambda: 1.0) == 30.0
    assert 15.0 <= backoff_delay(50, 0.5, 30) <= 30.0


def test_resume_query_and_redaction() -> None:
    assert with_query("ws://h/x?a=1&after=old", "after", "e 9") == "ws://h/x?a=1&after=e+9"
    assert redact_url("wss://u:p@hub.example:8443/ev?token=s") == "wss://hub.example:8443/ev"


def test_token_bucket_grants_what_it_holds() -> None:
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    assert bucket.take(8) == 8
    assert bucket.take(8) == 2
    assert bucket.take(1) == 0
    now[0] = 0.5
    assert bucket.take(10) == 5
    now[0] = 100.0
    assert bucket.take(100) == 10  # never more than one second's burst


def test_origin_check() -> None:
    assert origin_allowed(None, [])
    assert not origin_allowed("https://evil.example", [])
    assert origin_allowed("https://ops.example/", ["https://OPS.example"])
    assert origin_allowed("https://any.example", ["*"])
    assert not origin_allowed("null", ["https://ops.example"])


async def test_feed_batches_by_size_and_time() -> None:
    feed: Feed[str] = Feed(max_events=5, wait_s=0.01)
    for name in "abc":
        await feed.put(name, 2)
    assert await feed.take() == ["a", "b"]  # 4 events; "c" would make 6
    assert await feed.take() == ["c"]  # lingered 10 ms, then took what was there
    consumer = asyncio.create_task(feed.take())
    await asyncio.sleep(0)
    await feed.put("d", 1)
    feed.close()
    assert await consumer == ["d"]
    assert await feed.take() == []


async def test_feed_applies_backpressure() -> None:
    feed: Feed[int] = Feed(max_events=10, wait_s=0, max_pending=3)
    await feed.put(1, 3)
    blocked = asyncio.create_task(feed.put(2, 1))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert await feed.take() == [1]
    await asyncio.wait_for(blocked, 1)
    assert await feed.take() == [2]
