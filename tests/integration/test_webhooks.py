"""Webhook channels against a real HTTP receiver on loopback and a real store.

Backoff time is an injected clock (no waiting for retries); only the run-loop test uses the
wall clock, polling with a deadline. The restart of a real `opsmedic run` is in
test_webhooks_run.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.backends.webhooks.outbox import AUDIT_TOOL, WebhookOutbox, incident_link
from mcp_server.backends.webhooks.render import APPROVAL_TEXT
from mcp_server.core.events import EventBus
from mcp_server.core.incidents import Incidents
from mcp_server.deps import Deps
from mcp_server.models import IncidentStatus, Severity
from mcp_server.safety.audit import Auditor
from mcp_server.safety.redaction import Redactor
from mcp_server.services import build_services
from mcp_server.settings import Settings
from mcp_server.store.base import Store, open_store
from tests.helpers import ManualClock
from tests.integration.webhook_support import Receiver
from tests.unit.test_webhooks import validate

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOOK_SECRET = "hook-secret-5f2a9c"
DASHBOARD = "https://ops.example.test"


@pytest.fixture
def receiver() -> Any:
    r = Receiver().up()
    yield r
    r.down()


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(f"sqlite:///{tmp_path}/hooks.db")
    await s.open()
    yield s
    await s.close()


class Rig:
    """One OpsMedic's worth of parts on `store`: incidents, the feed, an outbox."""

    def __init__(self, store: Store, hooks: list[dict[str, Any]], clock: ManualClock,
                 tmp: Path, **settings: Any) -> None:  # fmt: skip
        self.settings = Settings(data_dir=tmp, notify={"webhooks": hooks}, **settings)
        self.store, self.clock = store, clock
        self.redactor = Redactor(self.settings.secret_values())
        self.auditor = Auditor(store, self.redactor)
        self.bus = EventBus(store)
        self.incidents = Incidents(store, self.bus)
        self.box = WebhookOutbox(store, self.bus, self.settings.notify.webhooks, self.redactor,
                                 self.auditor, DASHBOARD, clock=clock)  # fmt: skip

    async def queue_feed(self) -> int:
        """What follow() does: every feed event offered to the outbox (replays included)."""
        added = 0
        for event in await self.store.events_after(0, 1000):
            added += len(await self.box.enqueue(event))
        return added

    async def audit(self) -> list[Any]:
        return [e for e in await self.store.audit_entries() if e.tool == AUDIT_TOOL]

    async def hooks(self) -> list[Any]:
        return [m for m in await self.store.list_messages(limit=500) if m.direction == "hook"]


def hook(name: str, url: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "retry_base_s": 2, "retry_max_s": 60, **kw}


# --- what the receiver gets ------------------------------------------------------------------


async def test_each_format_reaches_the_receiver_as_its_system_documents(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    hooks = [hook("chat", receiver.url("/slack"), format="slack"),
             hook("teams", receiver.url("/teams"), format="teams"),
             hook("siem", receiver.url("/json"), format="json",
                  secret_header=f"X-OpsMedic-Token: {HOOK_SECRET}")]  # fmt: skip
    rig = Rig(sqlite, hooks, ManualClock(T0), tmp_path)
    inc, _ = await rig.incidents.report("container:web", "down", "web 137", Severity.critical)
    assert await rig.queue_feed() == 3
    report = await rig.box.flush()
    assert len(report["sent"]) == 3 and not report["retry"] and not report["fail"]
    by_path = {p.path: p for p in receiver.posts}
    assert set(by_path) == {"/slack", "/teams", "/json"}
    for path, fmt in (("/slack", "slack"), ("/teams", "teams"), ("/json", "json")):
        got = by_path[path]
        validate(fmt, got.json)
        assert got.headers["content-type"].startswith("application/json")
        assert got.headers["x-opsmedic-event"] == "opened"
        assert f"{DASHBOARD}/incidents/{inc.id}" in got.body.decode()
    assert by_path["/json"].headers["x-opsmedic-token"] == HOOK_SECRET
    assert "x-opsmedic-token" not in by_path["/slack"].headers
    assert by_path["/json"].json["delivery_id"] == by_path["/json"].delivery
    assert by_path["/json"].json["incident"]["severity"] == "critical"
    audit = await rig.audit()
    assert sorted(e.args["channel"] for e in audit) == ["chat", "siem", "teams"]
    assert {e.outcome for e in audit} == {"sent"} and {e.incident_id for e in audit} == {inc.id}


async def test_retries_while_the_receiver_is_down_then_exactly_one_delivery(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    clock = ManualClock(T0)
    rig = Rig(sqlite, [hook("a", receiver.url("/a")), hook("b", receiver.url("/b"))], clock,
              tmp_path)  # fmt: skip
    inc, _ = await rig.incidents.report("probe:api", "probe_failed", "api down")
    await rig.incidents.transition(inc.id, IncidentStatus.escalated, "restart would not help")
    assert await rig.queue_feed() == 4  # (opened, escalated) x (a, b)
    receiver.down()
    first = await rig.box.flush()
    # one refused connection per channel; the channel's other row waits without a try
    assert len(first["retry"]) == 2 and not first["sent"]
    assert "a: retry" in rig.box.status_text() and "cannot reach" in rig.box.status_text()
    assert await rig.box.flush() == {"sent": [], "retry": [], "fail": [], "busy": []}  # not due
    receiver.up()
    receiver.answer_next(4, 503)
    clock.now += timedelta(minutes=5)
    second = await rig.box.flush()
    assert len(second["retry"]) == 2 and not second["sent"] and len(receiver.refused) == 2
    clock.now += timedelta(minutes=5)
    while receiver._codes:  # the 503s not used up above, one per pass per channel
        await rig.box.flush()
        clock.now += timedelta(minutes=5)
    for _ in range(3):  # whatever is left, and more passes that must send nothing new
        await rig.box.flush()
        clock.now += timedelta(minutes=5)
    assert await rig.queue_feed() == 0  # a replay of the feed (a restart) queues nothing
    await rig.box.flush(clock.now + timedelta(hours=1))
    deliveries = Counter(p.delivery for p in receiver.posts)
    assert len(deliveries) == 4 and set(deliveries.values()) == {1}
    assert {m.status for m in await rig.hooks()} == {"sent"}
    audit = await rig.audit()
    assert len(audit) == 4 and {e.outcome for e in audit} == {"sent"}  # retries: not audited
    assert "a: sent" in rig.box.status_text()


async def test_nothing_is_sent_for_events_a_channel_did_not_subscribe_to(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    hooks = [
        hook("resolved-crit", receiver.url("/rc"), events=["resolved"], min_severity="critical"),
        hook("approvals", receiver.url("/ap"), events=["approval"], min_severity="info"),
    ]
    rig = Rig(sqlite, hooks, ManualClock(T0), tmp_path)
    warn, _ = await rig.incidents.report("container:a", "down", "a down", Severity.warning)
    await rig.incidents.transition(warn.id, IncidentStatus.escalated, "x")
    await rig.incidents.transition(warn.id, IncidentStatus.resolved, "a runs again")
    crit, _ = await rig.incidents.report("container:b", "down", "b down", Severity.critical)
    await rig.incidents.report("container:b", "down", "b down again", Severity.critical)  # repeat
    await rig.incidents.note(crit.id, "rca", "oom")
    await rig.incidents.transition(crit.id, IncidentStatus.awaiting_approval,
                                   "asked boss@example.test to approve a restart")  # fmt: skip
    await rig.incidents.transition(crit.id, IncidentStatus.resolved, "b runs again")
    await rig.queue_feed()
    await rig.box.flush()
    got = sorted((p.path, p.json["event"], p.json["incident"]["id"]) for p in receiver.posts)
    assert got == [("/ap", "approval", crit.id), ("/rc", "resolved", crit.id)]
    approval = next(p for p in receiver.posts if p.path == "/ap").json
    assert approval["text"] == APPROVAL_TEXT and "boss@example.test" not in json.dumps(approval)
    assert approval["incident"]["url"] == f"{DASHBOARD}/incidents/{crit.id}"
    assert len(await rig.hooks()) == 2  # nothing queued for the others either


async def test_secrets_are_redacted_in_bodies_store_audit_and_status(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    url = receiver.url("/services/T000/B000/XXXXSECRETPATH")
    hooks = [hook("siem", url, secret_header=f"Authorization: Bearer {HOOK_SECRET}")]
    rig = Rig(sqlite, hooks, ManualClock(T0), tmp_path, ingest={"token": "ingest-tok-77aa"})
    await rig.incidents.report("job:bot", "failed", "bot crashed: token ingest-tok-77aa, "
                               "password=hunter2 sent to " + url)  # fmt: skip
    await rig.queue_feed()
    receiver.answer_next(1, 401, f"bad credentials Bearer {HOOK_SECRET} for {url}")
    report = await rig.box.flush()
    assert len(report["fail"]) == 1  # a 401 is not retried: the secret will not get better
    assert len(receiver.refused) == 1
    sent_body = receiver.refused[0].body.decode()
    assert receiver.refused[0].headers["authorization"] == f"Bearer {HOOK_SECRET}"  # on the wire
    stored = json.dumps([m.model_dump(mode="json") for m in await rig.hooks()])
    audit = json.dumps([e.model_dump(mode="json") for e in await rig.audit()])
    for text in (sent_body, stored, audit, rig.box.status_text()):
        for secret in ("ingest-tok-77aa", "hunter2", HOOK_SECRET, "XXXXSECRETPATH"):
            assert secret not in text, (secret, text[:500])
    assert "[REDACTED]" in sent_body and "HTTP 401" in stored and "failed" in audit


async def test_gives_up_after_max_attempts_and_audits_the_failure(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    clock = ManualClock(T0)
    rig = Rig(sqlite, [hook("a", receiver.url(), max_attempts=3)], clock, tmp_path)
    await rig.incidents.report("container:web", "down", "web down")
    await rig.queue_feed()
    receiver.answer_next(10, 500, "boom")
    for _ in range(5):
        await rig.box.flush()
        clock.now += timedelta(minutes=5)
    assert len(receiver.refused) == 3 and not receiver.posts
    [row] = await rig.hooks()
    assert row.status == "failed" and "gave up after 3 attempts" in (row.last_error or "")
    [entry] = await rig.audit()
    assert entry.outcome == "failed" and entry.args["attempts"] == 3


async def test_two_instances_on_one_store_deliver_each_event_once(
    store_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    stores = [open_store(store_url), open_store(store_url)]
    for s in stores:
        await s.open()
    try:
        clock = ManualClock(T0)
        hooks = [hook("a", receiver.url("/a")), hook("b", receiver.url("/b"), format="slack")]
        one, two = (Rig(s, hooks, clock, tmp_path) for s in stores)
        for i in range(3):
            inc, _ = await one.incidents.report(f"container:c{i}", "down", f"c{i} down")
            await two.incidents.transition(inc.id, IncidentStatus.resolved, "up again")
        receiver.answer_next(2, 503)
        for _ in range(4):
            async with anyio.create_task_group() as tg:
                for rig in (one, two):
                    tg.start_soon(rig.queue_feed)
                    tg.start_soon(rig.box.flush)
            clock.now += timedelta(minutes=5)
        deliveries = Counter(p.delivery for p in receiver.posts)
        assert len(deliveries) == 12 and set(deliveries.values()) == {1}
        assert len(await one.audit()) == 12
    finally:
        for s in stores:
            await s.close()


async def test_the_duty_follows_the_feed_and_delivers(
    sqlite: Store, receiver: Receiver, tmp_path: Path
) -> None:
    rig = Rig(sqlite, [hook("a", receiver.url(), retry_base_s=0.05, retry_max_s=0.2)],
              ManualClock(T0), tmp_path)  # fmt: skip
    rig.box.clock = lambda: datetime.now(UTC)
    receiver.answer_next(2, 503)
    async with anyio.create_task_group() as tg:
        tg.start_soon(rig.box.run, 0.2)
        inc, _ = await rig.incidents.report("container:web", "down", "web down")
        with anyio.fail_after(30):
            while not receiver.posts:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    [post] = receiver.posts
    assert post.json["incident"]["id"] == inc.id and len(receiver.refused) == 2


@pytest.mark.parametrize(
    ("notify", "http", "link"),
    [
        (
            {"dashboard_url": "https://ops.example.test/"},
            {},
            "https://ops.example.test/incidents/5",
        ),
        ({}, {"port": 9911}, "http://127.0.0.1:9911/incidents/5"),
    ],
)
def test_wiring_links_the_dashboard_or_the_http_bind(
    tmp_path: Path, notify: dict[str, Any], http: dict[str, Any], link: str
) -> None:
    hooks = [{"name": "a", "url": "http://127.0.0.1:9/h"}]
    settings = Settings(data_dir=tmp_path, notify={**notify, "webhooks": hooks}, http=http)
    services = build_services(Deps.build(settings), docker=False)
    assert services.webhooks is not None
    assert incident_link(services.webhooks.dashboard_url, 5) == link
    bare = build_services(Deps.build(Settings(data_dir=tmp_path / "b")), docker=False)
    assert bare.webhooks is None  # no channels: no duty, nothing queued
