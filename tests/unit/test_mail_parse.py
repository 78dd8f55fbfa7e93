"""parse_reply on replies as real mail clients write them (Gmail, Outlook, Apple Mail, HTML)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mcp_server.backends.mail.parse import (
    MAX_NOTE_CHARS,
    decision_of,
    html_to_text,
    inbound_record,
    message_key,
    parse_reply,
)

TOKEN = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnop"  # token-shaped (48 base32 chars)


def mail(body: str, *, headers: str = "", to: str = f"ops+{TOKEN}@example.test") -> bytes:
    head = (
        "From: Alice Example <Alice@Example.TEST>\n"
        f"To: {to}\n"
        "Subject: Re: [OPSMEDIC-42] [CRITICAL] container:web died\n"
        "Message-ID: <reply-1@mail.example.test>\n"
        "In-Reply-To: <opsmedic-42-2@opsmedic.test>\n"
        "References: <opsmedic-incident-42@opsmedic.test> <opsmedic-42-2@opsmedic.test>\n"
        "Content-Type: text/plain; charset=utf-8\n"
        f"{headers}"
    )
    return (head + "\n" + body).replace("\n", "\r\n").encode()


ORIGINAL = """\
> OpsMedic wants to restart container:web (incident 42).
> Reply APPROVE or DENY on the first line.
> approve
> Token: {token}
"""


# --- quoting styles -----------------------------------------------------------------------


def test_gmail_reply_decision_above_the_quote() -> None:
    body = (
        "Approve\n\nthanks\n\nOn Mon, Mar 2, 2026 at 10:00 AM OpsMedic <ops@example.test> wrote:\n"
        + ORIGINAL.format(token=TOKEN)
    )
    parsed = parse_reply(mail(body))
    assert parsed.decision == "approve" and parsed.decision_line == "Approve"
    assert not parsed.decision_only_in_quote
    assert parsed.from_addr == "alice@example.test"
    assert parsed.incident_id == 42
    assert parsed.message_id == "<reply-1@mail.example.test>"
    assert parsed.in_reply_to == "<opsmedic-42-2@opsmedic.test>"
    assert parsed.references == [
        "<opsmedic-incident-42@opsmedic.test>",
        "<opsmedic-42-2@opsmedic.test>",
    ]
    assert parsed.note_text == "Approve\n\nthanks"


def test_gmail_wrapped_attribution_hides_a_decision_in_the_original() -> None:
    body = (
        "Looking into it, will answer soon.\n\n"
        "On Mon, Mar 2, 2026 at 10:00 AM OpsMedic Alerts <ops@example.test>\nwrote:\n\n"
        "approve\nOpsMedic wants to restart container:web\n"
    )
    parsed = parse_reply(mail(body))
    assert parsed.decision is None
    assert parsed.decision_only_in_quote
    assert parsed.note_text == "Looking into it, will answer soon."


def test_decision_only_in_quoted_lines() -> None:
    parsed = parse_reply(mail("Who changed this?\n\n" + ORIGINAL.format(token=TOKEN)))
    assert parsed.decision is None and parsed.decision_only_in_quote
    assert parsed.note_text == "Who changed this?"


def test_outlook_original_message_separator() -> None:
    body = (
        "Deny - wait until the deploy is finished.\n\n"
        "-----Original Message-----\nFrom: OpsMedic <ops@example.test>\n"
        "Sent: Monday, March 2, 2026 10:00 AM\nSubject: [OPSMEDIC-42]\n\nApprove\n"
    )
    parsed = parse_reply(mail(body))
    assert parsed.decision == "deny"
    assert parsed.decision_line == "Deny - wait until the deploy is finished."


@pytest.mark.parametrize(
    "separator",
    [
        "________________________________\nFrom: OpsMedic <ops@example.test>\n",
        "From: OpsMedic <ops@example.test>\nSent: Monday, March 2, 2026 10:00 AM\n",
        "-----Original Message-----\n",
        "-- \nAlice, SRE\n",
        "On 2 Mar 2026, at 10:00, OpsMedic <ops@example.test> wrote:\n\n",
    ],
)
def test_unquoted_original_after_a_cut_is_not_a_decision(separator: str) -> None:
    body = f"I'll call you.\n\n{separator}\nApprove\nTo: ops\nDeny\n"
    parsed = parse_reply(mail(body))
    assert parsed.decision is None and parsed.decision_only_in_quote
    assert parsed.note_text == "I'll call you."


def test_first_unquoted_decision_wins_after_a_greeting() -> None:
    body = "Hi OpsMedic,\n\n> approve\nDenied, the DB is in maintenance.\nApproved\n"
    parsed = parse_reply(mail(body))
    assert parsed.decision == "deny"
    assert parsed.decision_line == "Denied, the DB is in maintenance."


@pytest.mark.parametrize(
    ("line", "decision"),
    [
        ("approve", "approve"),
        ("APPROVED.", "approve"),
        ("Yes approve", "approve"),
        ("yes, approve it", "approve"),
        ("**APPROVE**", "approve"),
        ("  Approve  ", "approve"),
        ("deny", "deny"),
        ("DENIED", "deny"),
        ("Reject: not now", "deny"),
        ("rejected", "deny"),
        ("I do not approve", None),
        ("approvedx", None),
        ("approve or deny?", None),
        ("deny? approved?", None),
        ("yes", None),
        ("ok", None),
        ("no", None),
        ("", None),
    ],
)
def test_decision_words(line: str, decision: str | None) -> None:
    assert decision_of(line) == decision


# --- machines -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied\n",
        "Auto-Submitted: auto-generated; owner-email=x@example.test\n",
        "X-Autoreply: yes\n",
        "X-Autorespond: Out of office\n",
        "Precedence: bulk\n",
        "Precedence: auto_reply\n",
        "Precedence: junk\n",
        "Return-Path: <>\n",
    ],
)
def test_auto_replies_are_flagged_and_never_decide(header: str) -> None:
    parsed = parse_reply(mail("Approved leave until Monday.\n", headers=header))
    assert parsed.is_auto_reply and parsed.auto_reply_reason
    assert parsed.decision is None


def test_auto_submitted_no_is_a_person() -> None:
    parsed = parse_reply(mail("approve\n", headers="Auto-Submitted: no\nPrecedence: list\n"))
    assert not parsed.is_auto_reply and parsed.decision == "approve"


def test_delivery_report_is_a_machine() -> None:
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@example.test"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg.set_content("approve")
    msg.make_mixed()
    msg.set_type("multipart/report")
    assert parse_reply(msg.as_bytes()).is_auto_reply


# --- HTML and encodings -------------------------------------------------------------------


GMAIL_HTML = """\
<div dir="ltr">{top}<br><div>thanks</div></div><br>
<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Mar 2, 2026 at 10:00 AM
OpsMedic &lt;ops@example.test&gt; wrote:<br></div>
<blockquote class="gmail_quote" style="margin:0"><p>approve</p><p>Reply APPROVE or DENY</p>
<blockquote>deny</blockquote></blockquote></div>
<style>p {{ color: red }}</style><script>approve()</script>
"""


def html_mail(html: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["To"] = f"ops+{TOKEN}@example.test"
    msg["Subject"] = "Re: [OPSMEDIC-42] container:web died"
    msg["Message-ID"] = "<html-1@mail.example.test>"
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


def test_html_only_reply() -> None:
    parsed = parse_reply(html_mail(GMAIL_HTML.format(top="Denied &amp; escalate")))
    assert parsed.decision == "deny" and parsed.decision_line == "Denied & escalate"
    assert "> approve" in parsed.text and "> > deny" in parsed.text
    assert "color" not in parsed.text and "approve()" not in parsed.text


def test_html_only_reply_with_decision_only_in_blockquote() -> None:
    parsed = parse_reply(html_mail(GMAIL_HTML.format(top="let me check")))
    assert parsed.decision is None and parsed.decision_only_in_quote


def test_html_to_text_outlook_hr_is_a_cut() -> None:
    text = html_to_text("<p>fine by me</p><hr><p><b>From:</b> OpsMedic</p><p>Approve</p>")
    parsed = parse_reply(html_mail("<p>fine by me</p><hr><p><b>From:</b> x</p><p>Approve</p>"))
    assert text.splitlines()[0] == "fine by me"
    assert parsed.decision is None and parsed.decision_only_in_quote


def test_text_plain_preferred_over_html() -> None:
    msg = EmailMessage()
    msg["From"] = "alice@example.test"
    msg["Subject"] = "Re: [OPSMEDIC-9] x"
    msg.set_content("Deny\n")
    msg.add_alternative("<p>Approve</p>", subtype="html")
    parsed = parse_reply(msg.as_bytes())
    assert parsed.decision == "deny" and parsed.incident_id == 9


def test_encoded_subject_and_quoted_printable_latin1_body() -> None:
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.test>\r\n"
        b"Subject: =?utf-8?q?Re=3A_=5BOPSMEDIC-7=5D_Neustart_n=C3=B6tig?=\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"approve =E4hm ja\r\n"
    )
    parsed = parse_reply(raw)
    assert parsed.incident_id == 7 and parsed.subject == "Re: [OPSMEDIC-7] Neustart nötig"
    assert parsed.decision_line == "approve ähm ja"
    assert parsed.from_addr == "juergen@example.test"


# --- tokens -------------------------------------------------------------------------------


def test_plus_address_token_survives_case_change() -> None:
    parsed = parse_reply(mail("approve\n", to=f"OPS+{TOKEN.upper()}@EXAMPLE.TEST"))
    assert (parsed.token, parsed.token_source) == (TOKEN, "address")
    assert parsed.to_addrs == [f"ops+{TOKEN}@example.test"]


@pytest.mark.parametrize("header", ["Delivered-To", "X-Original-To"])
def test_token_from_delivery_headers(header: str) -> None:
    raw = mail("approve\n", to="ops@example.test", headers=f"{header}: ops+{TOKEN}@example.test\n")
    assert parse_reply(raw).token == TOKEN


def test_token_line_in_the_quoted_original() -> None:
    parsed = parse_reply(mail("approve\n\n" + ORIGINAL.format(token=TOKEN.upper()), to="ops@x.t"))
    assert (parsed.token, parsed.token_source) == (TOKEN, "body")


def test_no_token_anywhere() -> None:
    parsed = parse_reply(mail("approve\n", to="ops+short@example.test"))
    assert parsed.token is None and parsed.token_source is None


# --- robustness ---------------------------------------------------------------------------


def test_missing_message_id_gets_a_stable_content_key() -> None:
    raw = b"From: a@example.test\r\nSubject: hi\r\n\r\ndeny\r\n"
    parsed = parse_reply(raw)
    assert parsed.message_id == message_key(raw) == parse_reply(raw).message_id
    assert parsed.message_id.startswith("<sha256-") and parsed.problems
    assert message_key(mail("x")) == "<reply-1@mail.example.test>"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"From: <<<@@@>>>\r\nTo: ,,,\r\nMessage-ID: nope\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nbroken",
        b"Content-Type: text/plain; charset=no-such-charset\r\n\r\napprove\r\n",
    ],
)
def test_bad_input_never_raises(raw: bytes) -> None:
    parsed = parse_reply(raw)
    assert parsed.message_id.startswith("<")
    assert parsed.from_addr == "" or "@" in parsed.from_addr


def test_note_text_is_bounded_and_unquoted() -> None:
    parsed = parse_reply(mail("why? " * 2000 + "\n> quoted\n"))
    assert len(parsed.note_text) == MAX_NOTE_CHARS and "quoted" not in parsed.note_text


def test_inbound_record() -> None:
    record = inbound_record("<reply-1@mail.example.test>", 7, mail("approve\n"))
    assert record.direction == "in" and record.status == "processed"
    assert record.subject.startswith("Re: [OPSMEDIC-42]")
    assert record.headers == {"from": "Alice Example <Alice@Example.TEST>", "imap_uid": "7"}
