"""Pure mail composition: MIME shape, ids, threads, subjects, alert bodies, delivery rules."""

from __future__ import annotations

import email
import email.policy
import random
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import cast

import aiosmtplib
import pytest

from mcp_server.backends.mail.compose import (
    ALERT_MAX_CHARS,
    alert_body,
    compose,
    html_from_text,
    incident_from_thread,
    incident_thread_root,
    message_id_for,
    parse_recipients,
    subject_for,
    thread_headers,
)
from mcp_server.backends.mail.smtp import classify, retry_delay
from mcp_server.errors import InvalidInput
from mcp_server.models import (
    Evidence,
    Incident,
    IncidentStatus,
    Message,
    Rca,
    Severity,
    TimelineEntry,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _reparse(mail: EmailMessage) -> EmailMessage:
    raw = mail.as_bytes(policy=email.policy.SMTP)
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def _parts(mail: EmailMessage) -> dict[str, str]:
    return {p.get_content_type(): p.get_content().replace("\r\n", "\n") for p in mail.iter_parts()}


def _msg(**kw: object) -> Message:
    base: dict[str, object] = {
        "id": "k1",
        "to": ["ops@example.test"],
        "subject": "s",
        "body_text": "hello",
        "created_at": T0,
    }
    base.update(kw)
    return Message.model_validate(base)


# --- compose -------------------------------------------------------------------------------


def test_compose_is_multipart_alternative_with_escaped_html() -> None:
    msg = _msg(body_text="<script>alert(1)</script> & done\nline2")
    mail = _reparse(compose(msg, "OpsMedic <opsmedic@example.test>", "example.test"))
    assert mail.get_content_type() == "multipart/alternative"
    parts = _parts(mail)
    assert parts["text/plain"].rstrip("\n") == "<script>alert(1)</script> & done\nline2"
    assert "<script>" not in parts["text/html"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; done" in parts["text/html"]
    assert mail["From"] == "OpsMedic <opsmedic@example.test>"
    assert mail["To"] == "ops@example.test"
    assert mail["Date"].datetime == T0


def test_compose_message_id_is_stable_across_retries() -> None:
    first = compose(_msg(), "a@example.test", "example.test")
    again = compose(_msg(attempts=3), "a@example.test", "example.test")
    assert first["Message-ID"] == again["Message-ID"] == message_id_for("k1", "example.test")
    assert first.as_bytes() == again.as_bytes()
    assert message_id_for("k2", "example.test") != first["Message-ID"]


def test_compose_uses_stored_headers_and_given_html() -> None:
    headers = {
        "Message-ID": "<stored@example.test>",
        "In-Reply-To": "<a@example.test>",
        "References": "<root@example.test> <a@example.test>",
        "Reply-To": "ops+tok@example.test",
        "X-OpsMedic-Incident": "42",
    }
    msg = _msg(headers=headers, body_html="<p>given</p>")
    mail = _reparse(compose(msg, "a@example.test", "example.test"))
    for name, value in headers.items():
        assert mail[name] == value
    assert _parts(mail)["text/html"].strip() == "<p>given</p>"


def test_compose_flattens_header_injection() -> None:
    msg = _msg(subject="hi\r\nBcc: evil@example.test", headers={"X-Note": "a\nBcc: b@x"})
    mail = _reparse(compose(msg, "a@example.test", "example.test"))
    assert mail["Bcc"] is None
    assert mail["Subject"] == "hi Bcc: evil@example.test"


@pytest.mark.parametrize("name", ["To", "bcc", "Content-Type", "Bad Name", "X:y"])
def test_reserved_or_malformed_headers_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        compose(_msg(headers={name: "v"}), "a@example.test", "example.test")


def test_html_from_text_escapes_everything() -> None:
    page = html_from_text('a<b>"c"&')
    assert "a&lt;b&gt;&quot;c&quot;&amp;" in page


def test_parse_recipients() -> None:
    assert parse_recipients("a@x.test, Ops Team <b@y.test>") == ["a@x.test", "Ops Team <b@y.test>"]
    assert parse_recipients(["a@x.test", " "]) == ["a@x.test"]
    with pytest.raises(InvalidInput):
        parse_recipients("not-an-address")
    with pytest.raises(InvalidInput):
        parse_recipients([])


# --- threads and subjects ------------------------------------------------------------------


def test_thread_headers_first_and_later_mail() -> None:
    root = incident_thread_root(42, "example.test")
    assert root == "<opsmedic-incident-42@example.test>"
    assert thread_headers(42, "example.test", []) == {"In-Reply-To": root, "References": root}
    later = thread_headers(42, "example.test", ["<a@x>", "<b@x>"])
    assert later == {"In-Reply-To": "<b@x>", "References": f"{root} <a@x> <b@x>"}


def test_thread_headers_keep_references_bounded() -> None:
    ids = [f"<m{i}@x>" for i in range(30)]
    refs = thread_headers(7, "d.test", ids)["References"].split()
    assert refs[0] == incident_thread_root(7, "d.test")
    assert refs[-1] == "<m29@x>" and len(refs) == 11


def test_incident_from_thread() -> None:
    refs = "<x@y> <opsmedic-incident-42@example.test> <z@y>"
    assert incident_from_thread(refs) == 42
    assert incident_from_thread(refs, domain="example.test") == 42
    assert incident_from_thread(refs, domain="other.test") is None
    assert incident_from_thread("<x@y>") is None


def test_subject_for() -> None:
    assert subject_for(42, Severity.critical, "web died") == "[OPSMEDIC-42] [CRITICAL] web died"
    assert subject_for(None, "warning", "disk\nfull") == "[WARNING] disk full"
    assert subject_for(3, None, "x") == "[OPSMEDIC-3] x"


# --- alert bodies ----------------------------------------------------------------------------


def _incident(**kw: object) -> Incident:
    base: dict[str, object] = {
        "id": 42,
        "target": "container:web",
        "symptom": "oom",
        "title": "web was OOM-killed",
        "severity": Severity.critical,
        "status": IncidentStatus.healing,
        "count": 3,
        "opened_at": T0,
        "last_seen_at": T0,
    }
    base.update(kw)
    return Incident.model_validate(base)


def _rca() -> Rca:
    return Rca(
        incident_id=42,
        summary="memory limit 64m too small",
        category="oom",
        evidence=[Evidence(source="container:web", line="Killed <b>process</b> \x1b[31m1\x1b[0m")],
        recommendation="raise the limit to 256m",
        confidence=0.8,
    )


def test_alert_body_has_every_section() -> None:
    timeline = [
        TimelineEntry(ts=T0, kind="opened", text="opened"),
        TimelineEntry(ts=T0, kind="action", text="restarted container:web"),
        TimelineEntry(ts=T0, kind="status", text="healing -> verifying"),
    ]
    text, page = alert_body(_incident(timeline=timeline), _rca(), None, "http://dash.test/ui")
    for needle in (
        "Incident #42",
        "container:web",
        "oom",
        "healing",
        "Count:",
        "2025-03-01 12:00:00 UTC",
        "memory limit 64m too small",
        "raise the limit to 256m",
        "Killed <b>process</b> 1",
        "restarted container:web",
        "healing -> verifying",
        "http://dash.test/ui#incident-42",
    ):
        assert needle in text, needle
    assert "\x1b" not in text and "\x1b" not in page
    assert "opened" not in text.split("Actions taken")[1]
    assert "Killed &lt;b&gt;process&lt;/b&gt;" in page and "<b>process" not in page
    assert '<a href="http://dash.test/ui#incident-42">' in page


def test_alert_body_without_rca_actions_or_dashboard() -> None:
    text, page = alert_body(_incident(), None, [], None)
    assert "Root cause" not in text and "none yet" in text and "Dashboard" not in text
    assert "<a " not in page


def test_alert_body_only_links_web_urls() -> None:
    _, page = alert_body(_incident(), None, [], "javascript:alert(1)")
    assert "<a " not in page and "javascript" not in page


def test_alert_body_is_bounded() -> None:
    huge = [TimelineEntry(ts=T0, kind="action", text="x" * 400) for _ in range(500)]
    evidence = [Evidence(source="f", line="y" * 2000) for _ in range(500)]
    rca = _rca().model_copy(update={"evidence": evidence, "summary": "s" * 50_000})
    text, page = alert_body(_incident(), rca, huge, "http://d.test", max_chars=5_000)
    assert len(text) < 5_200 and "characters omitted; see http://d.test#incident-42" in text
    assert len(page) < 4 * 5_000
    text, _ = alert_body(_incident(), rca, huge, None)
    assert len(text) < ALERT_MAX_CHARS + 200 and "get_incident(42)" in text


# --- delivery rules (pure parts of mail_smtp) -------------------------------------------------


def test_retry_delay_doubles_and_caps() -> None:
    plain = [retry_delay(n, jitter=0.0) for n in (1, 2, 3, 4)]
    assert plain == [2.0, 4.0, 8.0, 16.0]
    assert retry_delay(30, jitter=0.0) == 300.0 and retry_delay(10_000, jitter=0.0) == 300.0
    rng = random.Random(1)
    jittered = [retry_delay(3, rng=rng) for _ in range(50)]
    assert all(8.0 <= d <= 8.8 for d in jittered) and len(set(jittered)) > 1


def test_classify_codes_and_outages() -> None:
    assert classify(aiosmtplib.SMTPDataError(451, "later"), connecting=False).permanent is False
    perm = classify(aiosmtplib.SMTPDataError(550, "no"), connecting=False)
    assert perm.permanent and not perm.outage and "550" in perm.text
    lost = classify(aiosmtplib.SMTPServerDisconnected("gone"), connecting=False)
    assert not lost.permanent and not lost.outage
    down = classify(ConnectionRefusedError(111, "refused"), connecting=True)
    assert down.outage and not down.permanent
    auth = classify(aiosmtplib.SMTPAuthenticationError(535, "bad"), connecting=True)
    assert auth.outage and "PASSWORD" in auth.text
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@x.test")]
    )
    assert classify(refused, connecting=False).permanent
    mixed = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(550, "unknown", "a@x.test"),
            aiosmtplib.SMTPRecipientRefused(452, "full", "b@x.test"),
        ]
    )
    assert not classify(mixed, connecting=False).permanent
