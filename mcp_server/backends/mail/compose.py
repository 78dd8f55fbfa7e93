"""Compose outgoing mail: MIME structure, Message-IDs, incident threads, alert bodies.

Everything here is pure (no I/O, no clock): the outbox (mail_out.py) stores a Message and
calls `compose()` on every attempt, so a retry sends byte-for-byte the same mail with the
same Message-ID, and mail clients can drop a duplicate.

Threading choice: every mail about incident N carries the incident's *root id*
`<opsmedic-incident-N@DOMAIN>` first in References. No mail uses the root as its own
Message-ID: each mail keeps the id derived from its own outbox key, so retries stay stable
and no two mails can ever share a Message-ID. Clients (Thunderbird, Apple Mail, mutt, Gmail)
thread on the shared References ancestor; a person's reply copies References, so the reply
reader can map any reply to its incident with `incident_from_thread()`.
Two OpsMedic deployments mailing the same people should use different sender domains,
or their incident numbers would share roots.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses

from mcp_server.errors import InvalidInput
from mcp_server.models import Incident, Message, Rca, Severity, TimelineEntry

#: alert_body() keeps the text part within this many characters.
ALERT_MAX_CHARS = 20_000
#: References keeps the root plus this many of the newest earlier Message-IDs.
MAX_REFERENCES = 10
#: Headers an outbox message may not set through Message.headers (compose owns them).
RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "date",
        "subject",
        "sender",
        "return-path",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    }
)
THREAD_HEADERS = ("Message-ID", "In-Reply-To", "References")

_HEADER_NAME_RE = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII without ':' (RFC 5322)
_ROOT_RE = re.compile(r"<opsmedic-incident-(\d{1,18})@([^>\s]+)>")
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")


# --- ids and threads --------------------------------------------------------------------


def message_id_for(key: str, domain: str) -> str:
    """The Message-ID of the outbox message with this key: same key, same id, every retry."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<opsmedic-{digest}@{domain}>"


def incident_thread_root(incident_id: int, domain: str) -> str:
    """The stable root id all mail about one incident references: <opsmedic-incident-42@d>."""
    return f"<opsmedic-incident-{int(incident_id)}@{domain}>"


def thread_headers(incident_id: int, domain: str, previous_ids: Sequence[str]) -> dict[str, str]:
    """In-Reply-To and References that put a new mail into the incident's thread.

    `previous_ids` are the Message-IDs of earlier mails about the incident, oldest first.
    References = root + the newest MAX_REFERENCES earlier ids; In-Reply-To = the newest
    earlier id, or the root for the first mail.
    """
    root = incident_thread_root(incident_id, domain)
    earlier = [i for i in previous_ids if i and i != root][-MAX_REFERENCES:]
    return {
        "In-Reply-To": earlier[-1] if earlier else root,
        "References": " ".join([root, *earlier]),
    }


def incident_from_thread(header_value: str, domain: str | None = None) -> int | None:
    """The incident id named by a root id inside References / In-Reply-To text, else None.

    With `domain`, only roots of that domain count (mail from another deployment is ignored).
    """
    for match in _ROOT_RE.finditer(header_value or ""):
        if domain is None or match.group(2).lower() == domain.lower():
            return int(match.group(1))
    return None


# --- text helpers -------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Drop ANSI escapes and control characters (keeping newline and tab) from body text."""
    text = _ANSI_RE.sub("", text.replace("\r\n", "\n"))
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def one_line(text: str, limit: int = 250) -> str:
    """Collapse whitespace (header values must not contain line breaks) and cap the length."""
    flat = " ".join(clean_text(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def bound_text(text: str, limit: int, hint: str = "") -> str:
    """Keep the first `limit` characters and say how many were left out (and where to look)."""
    if len(text) <= limit:
        return text
    note = f"\n\n[... {len(text) - limit} more characters omitted{'; ' + hint if hint else ''}]"
    return text[:limit] + note


def html_from_text(text: str) -> str:
    """A minimal HTML part showing `text` exactly, every character escaped."""
    return (
        '<!DOCTYPE html><html><body><pre style="white-space:pre-wrap;'
        'font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px">'
        f"{html.escape(text)}</pre></body></html>"
    )


def subject_for(incident_id: int | None, severity: Severity | str | None, text: str) -> str:
    """`[OPSMEDIC-42] [CRITICAL] text`; the tag is left out without an incident."""
    parts = []
    if incident_id is not None:
        parts.append(f"[OPSMEDIC-{int(incident_id)}]")
    if severity:
        parts.append(f"[{str(getattr(severity, 'value', severity)).upper()}]")
    parts.append(one_line(text, limit=200))
    return " ".join(p for p in parts if p)


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise InvalidInput for a header name that is malformed or owned by compose()."""
    for name in headers:
        if not _HEADER_NAME_RE.match(name):
            raise InvalidInput(f"mail header name {name!r} is malformed: use e.g. 'X-Team'")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(
                f"mail header {name!r} is set by OpsMedic itself: pass recipients as `to` "
                "and the subject as `subject` instead"
            )


def parse_recipients(to: str | Sequence[str]) -> list[str]:
    """Split and check recipients ("a@x, B <b@y>" or a list); InvalidInput when unusable."""
    items = [to] if isinstance(to, str) else list(to)
    found = [one_line(item, 320) for item in items if item and item.strip()]
    out: list[str] = []
    for name, addr in getaddresses(found):
        if "@" not in addr or any(ch.isspace() for ch in addr):
            raise InvalidInput(
                f"recipient {addr or name!r} is not a mail address like ops@example.com"
            )
        out.append(formataddr((name, addr)) if name else addr)
    if not out:
        raise InvalidInput("no recipients: pass `to` or set OPSMEDIC_NOTIFY__TO")
    return out


# --- MIME ------------------------------------------------------------------------------------


def compose(msg: Message, sender: str, domain: str) -> EmailMessage:
    """Build the MIME mail for an outbox message: multipart/alternative, text + HTML.

    Message-ID comes from msg.headers["Message-ID"] (stored at enqueue) or else from the
    message id, so every retry repeats it. Date is the message's creation time (when the
    alert was raised) and the MIME boundary comes from the content, so a retry is
    byte-for-byte the same mail. msg.headers adds In-Reply-To,
    References, Reply-To, X-OpsMedic-Incident and the like; values are flattened to one line.
    """
    check_headers(msg.headers)
    mail = EmailMessage()
    mail["Message-ID"] = msg.headers.get("Message-ID") or message_id_for(msg.id, domain)
    mail["Date"] = format_datetime(msg.created_at)
    mail["From"] = sender
    mail["To"] = ", ".join(msg.to)
    mail["Subject"] = one_line(msg.subject, limit=998)
    for name, value in msg.headers.items():
        if name.lower() != "message-id":
            mail[name] = one_line(value, limit=998)
    text = clean_text(msg.body_text)
    mail.set_content(text if text.endswith("\n") else text + "\n")
    page = msg.body_html or html_from_text(text)
    mail.add_alternative(page, subtype="html")
    # A boundary from the content (not random): retries are byte-for-byte the same, and no
    # body can contain the hash of itself.
    seed = "\x1f".join([msg.id, text, page]).encode("utf-8", "replace")
    mail.set_boundary(f"=_opsmedic_{hashlib.sha256(seed).hexdigest()[:32]}")
    return mail


# --- alert bodies ----------------------------------------------------------------------------

_MAX_EVIDENCE = 40
_MAX_ACTIONS = 40
_MAX_LINE = 500
_ACTION_KINDS = frozenset({"action", "status"})


def _when(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(incident: Incident) -> list[tuple[str, str]]:
    return [
        ("Target", incident.target),
        ("Symptom", incident.symptom),
        ("Severity", incident.severity.value),
        ("Status", incident.status.value),
        ("Count", str(incident.count)),
        ("Opened", _when(incident.opened_at)),
        ("Last seen", _when(incident.last_seen_at)),
    ]


def _rca_lines(rca: Rca) -> tuple[list[tuple[str, str]], list[str]]:
    facts = [
        ("Summary", rca.summary),
        ("Category", rca.category),
        ("Author", f"{rca.author} (confidence {rca.confidence:.2f})"),
    ]
    if rca.recommendation:
        facts.append(("Recommendation", rca.recommendation))
    evidence = [one_line(f"[{e.source}] {e.line}", _MAX_LINE) for e in rca.evidence[:_MAX_EVIDENCE]]
    if len(rca.evidence) > _MAX_EVIDENCE:
        evidence.append(f"... {len(rca.evidence) - _MAX_EVIDENCE} more evidence lines")
    return facts, evidence


def _action_lines(entries: Iterable[TimelineEntry]) -> list[str]:
    lines = [one_line(f"{_when(e.ts)}  {e.kind}  {e.text} ({e.actor})", _MAX_LINE) for e in entries]
    if len(lines) > _MAX_ACTIONS:
        return [f"... {len(lines) - _MAX_ACTIONS} earlier entries", *lines[-_MAX_ACTIONS:]]
    return lines


def _text_section(title: str, facts: list[tuple[str, str]], items: list[str]) -> str:
    width = max((len(k) for k, _ in facts), default=0) + 1
    rows = [f"{k + ':':<{width}} {clean_text(v)}" for k, v in facts]
    return "\n".join([title, "-" * len(title), *rows, *(f"  {i}" for i in items)])


def _html_section(title: str, facts: list[tuple[str, str]], items: list[str]) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr><th align="left" style="padding-right:12px">{esc(k)}</th>'
        f"<td>{esc(clean_text(v))}</td></tr>"
        for k, v in facts
    )
    table = f"<table>{rows}</table>" if rows else ""
    listing = "".join(f"<li><code>{esc(i)}</code></li>" for i in items)
    return f"<h3>{esc(title)}</h3>{table}" + (f"<ul>{listing}</ul>" if listing else "")


def alert_body(
    incident: Incident,
    rca: Rca | None = None,
    actions: Sequence[TimelineEntry] | None = None,
    dashboard_url: str | None = None,
    max_chars: int = ALERT_MAX_CHARS,
) -> tuple[str, str]:
    """Render an incident alert as (text, html).

    Sections: the incident (target, symptom, severity, status, count, opened, last seen),
    the RCA when present (summary, category, author, recommendation, evidence lines),
    actions taken (`actions`, or the incident's timeline entries of kind action/status),
    and a dashboard link (`dashboard_url#incident-N`) when a URL is known. Every value is
    escaped in the HTML part; the text part is capped at `max_chars` with a note, and the
    HTML falls back to the capped text when it would be much larger.
    """
    taken = (
        [e for e in incident.timeline if e.kind in _ACTION_KINDS] if actions is None else actions
    )
    sections: list[tuple[str, list[tuple[str, str]], list[str]]] = [
        (f"Incident #{incident.id}: {one_line(incident.title, 300)}", _facts(incident), [])
    ]
    if rca is not None:
        facts, evidence = _rca_lines(rca)
        sections.append(
            ("Root cause analysis", facts, (["Evidence:"] if evidence else []) + evidence)
        )
    sections.append(("Actions taken", [], _action_lines(taken) or ["none yet"]))
    web = dashboard_url and dashboard_url.lower().startswith(("http://", "https://"))
    link = f"{dashboard_url}#incident-{incident.id}" if web else None
    hint = f"see {link}" if link else f"call get_incident({incident.id})"
    text = "\n\n".join(_text_section(*s) for s in sections)
    if link:
        text += f"\n\nDashboard: {link}"
    text = bound_text(text, max_chars, hint) + "\n"
    body = "".join(_html_section(*s) for s in sections)
    if link:
        body += f'<p>Dashboard: <a href="{html.escape(link)}">{html.escape(link)}</a></p>'
    page = f"<!DOCTYPE html><html><body>{body}</body></html>"
    return text, (page if len(page) <= 3 * max_chars else html_from_text(text))
