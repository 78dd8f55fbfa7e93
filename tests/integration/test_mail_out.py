"""The mail outbox against a real SMTP server (aiosmtpd) and a real SQLite store.

Time for the backoff is an injected clock, so retries need no waiting; only the run() loop
tests use the wall clock, and they poll with a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from mcp_server.backends.mail.compose import incident_thread_root, subject_for
from mcp_server.backends.mail.outbox import Outbox
from mcp_server.models import Severity
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import SmtpSettings
from mcp_server.store.sqlite import SqliteStore
from tests.conftest import SmtpSink
from tests.helpers import ManualClock

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LATER = timedelta(hours=1)  # beyond any backoff (capped at 5 min)
FROM = "OpsMedic <opsmedic@example.test>"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(f"sqlite:///{tmp_path}/x.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def smtp_settings(host: str | None, port: int, **kw: Any) -> SmtpSettings:
    return SmtpSettings.model_validate({"host": host, "port": port, "from": FROM, **kw})


def outbox(store: SqliteStore, sink: SmtpSink, **kw: Any) -> Outbox:
    redactor = kw.pop("redactor", Redactor())
    clock = kw.pop("clock", ManualClock(T0))
    return Outbox(store, smtp_settings(sink.host, sink.port, timeout_s=5), redactor, clock, **kw)


def parts(mail: EmailMessage) -> dict[str, str]:
    return {p.get_content_type(): str(p.get_content()) for p in mail.iter_parts()}


# --- what is sent --------------------------------------------------------------------------


async def test_sent_mail_is_multipart_tagged_and_threaded(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    subject = subject_for(42, Severity.critical, "web died")
    msg = await box.enqueue("ops@example.test", subject, "web <died>", incident_id=42)
    report = await box.flush()
    assert report.sent == [msg.id] and not report.deferred and not report.failed
    [mail] = smtp_server.messages
    assert mail["Subject"] == "[OPSMEDIC-42] [CRITICAL] web died"
    assert mail.get_content_type() == "multipart/alternative"
    assert "web <died>" in parts(mail)["text/plain"]
    assert "web &lt;died&gt;" in parts(mail)["text/html"]
    assert mail["Message-ID"] == msg.headers["Message-ID"]
    assert mail["Message-ID"].endswith("@example.test>")
    root = incident_thread_root(42, "example.test")
    assert mail["In-Reply-To"] == root and mail["References"] == root
    assert mail["X-OpsMedic-Incident"] == "42" and mail["Auto-Submitted"] == "auto-generated"
    assert smtp_server.envelopes[0].mail_from == "opsmedic@example.test"
    assert smtp_server.envelopes[0].rcpt_tos == ["ops@example.test"]
    stored = await store.get_message(msg.id)
    assert stored is not None and stored.status == "sent" and stored.sent_at == T0


async def test_mails_about_one_incident_form_one_thread(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    clock = cast(ManualClock, box.clock)
    await box.enqueue("ops@example.test", "[OPSMEDIC-7] opened", "one", incident_id=7)
    clock.now += timedelta(seconds=1)
    await box.enqueue("ops@example.test", "[OPSMEDIC-7] restarted", "two", incident_id=7)
    clock.now += timedelta(seconds=1)
    await box.enqueue("ops@example.test", "[OPSMEDIC-7] resolved", "three", incident_id=7)
    await box.enqueue("ops@example.test", "other incident", "x", incident_id=8)
    await box.flush()
    by_subject = {m["Subject"]: m for m in smtp_server.wait_for(4)}
    first, second, third = (
        by_subject[f"[OPSMEDIC-7] {s}"] for s in ("opened", "restarted", "resolved")
    )
    root = incident_thread_root(7, "example.test")
    assert second["In-Reply-To"] == first["Message-ID"]
    assert second["References"].split() == [root, first["Message-ID"]]
    assert third["In-Reply-To"] == second["Message-ID"]
    assert third["References"].split() == [root, first["Message-ID"], second["Message-ID"]]
    assert root not in by_subject["other incident"]["References"]


async def test_caller_headers_keep_the_thread_root(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    headers = {"Reply-To": "ops+abc@example.test", "References": "<their@mail.test>"}
    await box.enqueue("ops@example.test", "s", "t", incident_id=5, headers=headers)
    await box.flush()
    [mail] = smtp_server.messages
    assert mail["Reply-To"] == "ops+abc@example.test"
    assert mail["References"].split() == [
        incident_thread_root(5, "example.test"),
        "<their@mail.test>",
    ]


# --- exactly once ----------------------------------------------------------------------------


async def test_same_key_or_same_content_is_sent_once(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    a = await box.enqueue("ops@example.test", "s", "body", incident_id=1, key="alert:1:opened")
    b = await box.enqueue("ops@example.test", "s2", "changed", incident_id=1, key="alert:1:opened")
    c = await box.enqueue("ops@example.test", "same", "content")
    d = await box.enqueue("ops@example.test", "same", "content")
    assert a.id == b.id == "alert:1:opened" and b.subject == "s" and c.id == d.id
    assert sorted((await box.flush()).sent) == sorted([a.id, c.id])
    assert (await box.flush(T0 + LATER)).sent == []
    await box.enqueue("ops@example.test", "same", "content")  # after sending, still once
    assert (await box.flush(T0 + 2 * LATER)).sent == []
    assert len(smtp_server.messages) == 2


async def test_4xx_is_retried_after_backoff_and_delivered_once(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    smtp_server.refuse_next(2, 451)
    msg = await box.enqueue("ops@example.test", "s", "t")
    report = await box.flush()
    assert report.deferred == [msg.id] and "451" in report.errors[msg.id]
    stored = await store.get_message(msg.id)
    assert stored is not None and stored.status == "queued" and stored.attempts == 1
    assert T0 + timedelta(seconds=2) <= stored.next_attempt_at <= T0 + timedelta(seconds=2.2)
    assert (await box.flush(T0)).deferred == []  # not due yet: nothing tried
    assert (await box.flush(T0 + LATER)).deferred == [msg.id]
    second = await store.get_message(msg.id)
    assert second is not None and second.attempts == 2
    assert second.next_attempt_at - (T0 + LATER) >= timedelta(seconds=4)
    assert (await box.flush(T0 + 2 * LATER)).sent == [msg.id]
    assert (await box.flush(T0 + 3 * LATER)).sent == []
    assert len(smtp_server.messages) == 1


async def test_drop_mid_data_is_retried_and_delivered_once(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    smtp_server.drop_next(1)
    msg = await box.enqueue("ops@example.test", "s", "t")
    report = await box.flush()
    assert report.deferred == [msg.id] and "connection lost" in report.errors[msg.id]
    assert smtp_server.messages == []  # the sink does not keep a dropped message
    assert (await box.flush(T0 + LATER)).sent == [msg.id]
    assert (await box.flush(T0 + 2 * LATER)).sent == []
    [mail] = smtp_server.messages
    assert mail["Message-ID"] == msg.headers["Message-ID"]


async def test_server_down_then_back_delivers_once_and_never_gives_up(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server, max_attempts=2)
    smtp_server.stop()
    a = await box.enqueue("ops@example.test", "a", "t")
    b = await box.enqueue("ops@example.test", "b", "t")
    for hour in range(4):  # more tries than max_attempts: an outage is not the mail's fault
        report = await box.flush(T0 + hour * LATER)
        assert sorted(report.deferred) == sorted([a.id, b.id]) and not report.failed
        assert "cannot reach" in report.errors[a.id]
    smtp_server.start()
    assert sorted((await box.flush(T0 + 5 * LATER)).sent) == sorted([a.id, b.id])
    assert (await box.flush(T0 + 6 * LATER)).sent == []
    assert sorted(m["Subject"] for m in smtp_server.messages) == ["a", "b"]


async def test_5xx_fails_at_once_and_is_not_retried(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server)
    smtp_server.refuse_next(1, 550)
    msg = await box.enqueue("ops@example.test", "s", "t")
    assert (await box.flush()).failed == [msg.id]
    assert (await box.flush(T0 + LATER)).sent == []
    stored = await store.get_message(msg.id)
    assert stored is not None and stored.status == "failed" and stored.attempts == 1
    assert stored.last_error is not None and "550" in stored.last_error
    assert smtp_server.messages == []


async def test_4xx_forever_gives_up_after_max_attempts(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = outbox(store, smtp_server, max_attempts=3)
    smtp_server.refuse_next(10, 452)
    msg = await box.enqueue("ops@example.test", "s", "t")
    outcomes = [await box.flush(T0 + i * LATER) for i in range(4)]
    assert [r.deferred for r in outcomes[:2]] == [[msg.id], [msg.id]]
    assert outcomes[2].failed == [msg.id] and outcomes[3].failed == []
    stored = await store.get_message(msg.id)
    assert stored is not None and stored.status == "failed" and stored.attempts == 3
    assert stored.last_error is not None and "gave up: 3 attempts" in stored.last_error


# --- crashes and restarts --------------------------------------------------------------------


async def test_new_outbox_on_the_same_file_sends_what_a_dead_one_queued(
    store: SqliteStore, smtp_server: SmtpSink, tmp_path: Path
) -> None:
    dead = outbox(store, smtp_server)
    msg = await dead.enqueue("ops@example.test", "queued before the crash", "t", incident_id=3)
    # the process "dies" here: no flush, no close. A new process opens the same file.
    fresh_store = SqliteStore(f"sqlite:///{tmp_path}/x.db")
    await fresh_store.open()
    try:
        assert (await outbox(fresh_store, smtp_server).flush()).sent == [msg.id]
    finally:
        await fresh_store.close()
    [mail] = smtp_server.messages
    assert mail["Message-ID"] == msg.headers["Message-ID"]


async def test_crash_after_250_resends_the_same_message_id(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    """The documented at-least-once edge: sent, but the store update never happened."""
    box = outbox(store, smtp_server)
    msg = await box.enqueue("ops@example.test", "s", "t")
    await box.flush()
    await store.update_message(msg)  # as if we died between the 250 and the update
    await outbox(store, smtp_server).flush()
    first, again = smtp_server.wait_for(2)
    assert first["Message-ID"] == again["Message-ID"] == msg.headers["Message-ID"]
    assert first.as_bytes() == again.as_bytes()


async def test_unconfigured_outbox_keeps_mail_for_later(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    quiet = Outbox(store, smtp_settings(None, 25), Redactor(), ManualClock(T0))
    msg = await quiet.enqueue("ops@example.test", "s", "t")
    report = await quiet.flush()
    assert not report.configured and report.waiting == 1 and report.note is not None
    assert "OPSMEDIC_SMTP__HOST" in report.note
    assert (await outbox(store, smtp_server).flush()).sent == [msg.id]


async def test_two_outboxes_sharing_a_store_send_once(
    store: SqliteStore, smtp_server: SmtpSink, tmp_path: Path
) -> None:
    other_store = SqliteStore(f"sqlite:///{tmp_path}/x.db")
    await other_store.open()
    try:
        boxes = [outbox(store, smtp_server), outbox(other_store, smtp_server)]
        ids = {(await boxes[0].enqueue("ops@example.test", f"m{i}", "t")).id for i in range(5)}
        reports: list[Any] = []
        async with anyio.create_task_group() as tg:
            for box in boxes:
                tg.start_soon(_collect, box, reports)
        sent = [i for r in reports for i in r.sent]
        assert sorted(sent) == sorted(ids)
    finally:
        await other_store.close()
    assert len(smtp_server.messages) == 5


async def _collect(box: Outbox, into: list[Any]) -> None:
    into.append(await box.flush())


# --- secrets -----------------------------------------------------------------------------------


async def test_secrets_never_reach_the_mail_or_the_store(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    secret = "s3cr3t-Value-1234"
    box = outbox(store, smtp_server, redactor=Redactor([secret]))
    msg = await box.enqueue(
        "ops@example.test",
        f"token {secret}",
        f"the key is {secret}\npassword=hunter2hunter2",
        html=f"<p>{secret}</p>",
        headers={"X-Note": secret},
    )
    assert (await box.flush()).sent == [msg.id]
    raw = cast(bytes, smtp_server.envelopes[0].original_content)
    decoded = "".join(parts(smtp_server.messages[0]).values()) + str(smtp_server.messages[0])
    for blob in (raw.decode("utf-8", "replace"), decoded):
        assert secret not in blob and "hunter2hunter2" not in blob
    assert "[REDACTED]" in decoded
    stored = await store.get_message(msg.id)
    assert stored is not None and secret not in stored.model_dump_json()


# --- the run loop (wall clock; polls with a deadline) -----------------------------------------


async def _until(condition: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.02)


async def test_run_sends_right_after_enqueue_and_retries_by_itself(
    store: SqliteStore, smtp_server: SmtpSink
) -> None:
    box = Outbox(
        store,
        smtp_settings(smtp_server.host, smtp_server.port, timeout_s=5),
        Redactor(),
        base_delay_s=0.05,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(box.run, 60.0)  # only wake() or a due retry can make it send in time
        await box.enqueue("ops@example.test", "first", "t")
        await _until(lambda: len(smtp_server.messages) == 1)
        smtp_server.refuse_next(1, 451)
        msg = await box.enqueue("ops@example.test", "second", "t")
        with anyio.fail_after(10):
            while (await store.get_message(msg.id) or msg).status != "sent":
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()
    stored = await store.get_message(msg.id)
    assert stored is not None and stored.attempts == 2
    assert [m["Subject"] for m in smtp_server.messages] == ["first", "second"]
