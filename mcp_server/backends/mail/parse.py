"""Read a reply mail: who sent it, which incident and token it carries, and what it decides.

`parse_reply(raw)` is pure and never raises for bad input: whatever cannot be read is left
empty and named in `problems`. The decision is the first *unquoted* line that starts with one
of a small explicit list of words (case-insensitive, whole word at the start of the line):

    approve: approve, approved, yes approve
    deny:    deny, denied, reject, rejected

Quoted text does not count: lines starting with ``>``, and everything after an ``On ...
wrote:`` attribution, an ``-----Original Message-----`` or Outlook ``From:/Sent:`` header
block, a ``____`` separator, or a ``-- `` signature line. A decision seen only there gives
``decision=None`` with ``decision_only_in_quote=True`` (someone replied without answering).
HTML-only replies are turned into text first; ``<blockquote>`` content counts as quoted.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.models import Message as StoredMessage

MAX_TEXT_CHARS = 64 * 1024
MAX_NOTE_CHARS = 4000
#: Same shape and Message-ID prefix as mcp_server.safety.approval_tokens (a test checks it).
TOKEN_PATTERN = r"[a-z2-7]{48}"
TOKEN_MSGID_PREFIX = "opsmedic-approval."

Decision = Literal["approve", "deny"]
_TOKEN_RE = re.compile(rf"^{TOKEN_PATTERN}$")
_TOKEN_LINE_RE = re.compile(rf"^[>\s]*token:\s*({TOKEN_PATTERN})\b", re.IGNORECASE | re.MULTILINE)
_MSGID_TOKEN_RE = re.compile(rf"<{re.escape(TOKEN_MSGID_PREFIX)}({TOKEN_PATTERN})@", re.IGNORECASE)
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_TAG_RE = re.compile(r"\[OPSMEDIC-(\d{1,12})\]", re.IGNORECASE)
_APPROVE_RE = re.compile(r"^(?:yes[,:]?\s+)?approved?\b", re.IGNORECASE)
_DENY_RE = re.compile(r"^(?:deny|denied|reject|rejected)\b", re.IGNORECASE)
_ON_WROTE_RE = re.compile(r"^On\s.*\bwrote:\s*$", re.IGNORECASE)
_WROTE_END_RE = re.compile(r"\bwrote:\s*$", re.IGNORECASE)
_ORIGINAL_RE = re.compile(r"^-{2,}\s*Original Message\s*-{2,}\s*$", re.IGNORECASE)
_UNDERSCORES_RE = re.compile(r"^_{10,}\s*$")
_OUTLOOK_FROM_RE = re.compile(r"^\*?From:\*?\s", re.IGNORECASE)
_OUTLOOK_NEXT_RE = re.compile(r"^\*?(Sent|Date|To):\*?\s", re.IGNORECASE)
_BLANK_RUNS_RE = re.compile(r"\n{3,}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keeps \t and \n
_ADDRESS_HEADERS = ("To", "Cc", "Delivered-To", "X-Original-To", "Envelope-To")
_AUTO_PRECEDENCE = {"bulk", "auto_reply", "junk"}


class ParsedReply(BaseModel):
    """What OpsMedic needs from one incoming mail; addresses are bare and lower-case."""

    model_config = ConfigDict(extra="forbid")

    message_id: str  # as in the header, with <>; a sha256-based stand-in when missing
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    from_addr: str = ""
    to_addrs: list[str] = Field(default_factory=list)  # To, Cc, Delivered-To, X-Original-To
    subject: str = ""
    incident_id: int | None = None  # from a subject tag like [OPSMEDIC-42]
    token: str | None = None  # lower-case approval token, not yet verified
    token_source: Literal["address", "body", "references"] | None = None
    is_auto_reply: bool = False
    auto_reply_reason: str | None = None
    text: str = ""  # text/plain body, or the HTML body as text
    decision: Decision | None = None
    decision_line: str | None = None
    decision_only_in_quote: bool = False
    note_text: str = ""  # the unquoted text, bounded; a note when there is no decision
    problems: list[str] = Field(default_factory=list)


def _read(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header must not sink the whole reply
        return ""
    return " ".join(str(value).split()) if value is not None else ""


def _headers(msg: Message, name: str) -> list[str]:
    try:
        return [str(v) for v in msg.get_all(name) or []]
    except Exception:
        return []


def _key(msg: Message | None, raw: bytes) -> str:
    found = _MSGID_RE.search(_header(msg, "Message-ID")) if msg is not None else None
    if found:
        return found.group(0)
    return f"<sha256-{hashlib.sha256(raw).hexdigest()}@opsmedic.invalid>"


def message_key(raw: bytes) -> str:
    """The Message-ID (with <>), or ``<sha256-HEX@opsmedic.invalid>`` when it has none.

    The IMAP watcher records processed mail under this key; use the same for any record.
    """
    return _key(_read_head(raw), raw)


def _read_head(raw: bytes) -> Message | None:
    try:
        return BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    except Exception:
        return None


def inbound_record(key: str, uid: int | None, raw: bytes) -> StoredMessage:
    """The store's record of a processed incoming mail (id = its message_key)."""
    head = _read_head(raw)
    return StoredMessage(
        id=key,
        direction="in",
        status="processed",
        subject=_header(head, "Subject")[:300] if head is not None else "",
        headers={
            "from": _header(head, "From")[:300] if head is not None else "",
            **({"imap_uid": str(uid)} if uid is not None else {}),
        },
    )


def _addresses(msg: Message, names: tuple[str, ...]) -> list[str]:
    values = [v for name in names for v in _headers(msg, name)]
    found: list[str] = []
    for _, addr in getaddresses(values):
        bare = addr.strip().lower()
        if "@" in bare and bare not in found:
            found.append(bare)
    return found


def auto_reply_reason(msg: Message) -> str | None:
    """Why this mail looks machine-sent (vacation, bounce, list), or None for a person."""
    auto = _header(msg, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if name in msg:
            return f"{name} present"
    precedence = _header(msg, "Precedence").lower()
    if precedence in _AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    if _header(msg, "Return-Path").replace(" ", "") == "<>":
        return "empty Return-Path (a bounce)"
    if msg.get_content_type() == "multipart/report":
        return "delivery report"
    return None


# --- body -----------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """HTML to plain lines; text inside <blockquote> gets one '> ' per nesting level."""

    _BLOCK = {"p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre"}
    _SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._depth = 0
        self._skip = 0

    def _flush(self) -> None:
        text = " ".join("".join(self._line).split())
        self._line = []
        self.lines.append(("> " * self._depth + text) if text else "")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "blockquote":
            self._flush()
            self._depth += 1
        elif tag == "hr":
            self._flush()
            self.lines.append("_" * 20)
        elif tag in self._BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "blockquote":
            self._flush()
            self._depth = max(0, self._depth - 1)
        elif tag in self._BLOCK:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._line.append(data)


def html_to_text(html: str) -> str:
    """Readable text of an HTML body; blockquoted parts come out '> '-quoted."""
    parser = _HtmlText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; this is for pathological input only
        pass
    parser._flush()
    return _BLANK_RUNS_RE.sub("\n\n", "\n".join(parser.lines)).strip()


def _content(part: MIMEPart) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except Exception:  # unknown charset or broken transfer encoding: decode by hand
        pass
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def body_text(msg: EmailMessage) -> str:
    """The text/plain body, else the HTML body as text; "" when there is neither."""
    for kind in ("plain", "html"):
        try:
            part = msg.get_body(preferencelist=(kind,))
        except Exception:
            part = None
        if part is not None:
            text = _content(part)
            return (html_to_text(text) if kind == "html" else text)[:MAX_TEXT_CHARS]
    return ""


# --- decision -------------------------------------------------------------------------


def decision_of(line: str) -> Decision | None:
    """approve / deny when the line starts with one of the accepted words, else None."""
    text = line.strip().lstrip("*_ ").strip()
    approve, deny = bool(_APPROVE_RE.match(text)), bool(_DENY_RE.match(text))
    if approve and re.search(r"\b(deny|denied|reject|rejected)\b", text, re.IGNORECASE):
        return None  # "approve or deny?" is a question, not an answer
    if deny and re.search(r"\bapproved?\b", text, re.IGNORECASE):
        return None
    return "approve" if approve else "deny" if deny else None


def _is_cut(lines: list[str], i: int) -> bool:
    """Does line i start quoted history (attribution, separator, header block, signature)?"""
    line = lines[i].rstrip("\r")
    stripped = line.strip()
    if line in ("-- ", "--") or _ORIGINAL_RE.match(stripped) or _UNDERSCORES_RE.match(stripped):
        return True
    if _ON_WROTE_RE.match(stripped):
        return True
    following = [s.strip() for s in lines[i + 1 : i + 4] if s.strip()]
    if stripped.lower().startswith("on ") and following and _WROTE_END_RE.search(following[0]):
        return True  # Gmail wraps a long attribution over two lines
    return bool(
        _OUTLOOK_FROM_RE.match(stripped) and following and _OUTLOOK_NEXT_RE.match(following[0])
    )


def split_reply(text: str) -> tuple[list[str], list[str]]:
    """(unquoted lines, quoted lines): quoted = '>' lines and all after the first cut."""
    lines = text.replace("\r\n", "\n").split("\n")
    fresh: list[str] = []
    quoted: list[str] = []
    for i, line in enumerate(lines):
        if _is_cut(lines, i):
            quoted.extend(lines[i:])
            break
        (quoted if line.lstrip().startswith(">") else fresh).append(line)
    return fresh, quoted


def scan_decision(text: str) -> tuple[Decision | None, str | None, bool, str]:
    """(decision, its line, decision_only_in_quote, unquoted text bounded for a note)."""
    fresh, quoted = split_reply(text)
    note = _CONTROL_RE.sub("", "\n".join(fresh)).strip()[:MAX_NOTE_CHARS]
    for line in fresh:
        if line.strip():
            found = decision_of(line)
            if found:
                return found, line.strip(), False, note
    in_quote = any(decision_of(q.strip().lstrip(">").strip()) for q in quoted)
    return None, None, in_quote, note


# --- the whole reply ------------------------------------------------------------------


def find_token(
    msg: Message, to_addrs: list[str], text: str
) -> tuple[str | None, Literal["address", "body", "references"] | None]:
    """The approval token from a plus-address, a ``Token:`` line, or a References id."""
    for addr in to_addrs:
        local = addr.rpartition("@")[0]
        tag = local.split("+", 1)[1] if "+" in local else ""
        if _TOKEN_RE.match(tag):
            return tag, "address"
    line = _TOKEN_LINE_RE.search(text)
    if line:
        return line.group(1).lower(), "body"
    ids = " ".join([_header(msg, "References"), _header(msg, "In-Reply-To")])
    ref = _MSGID_TOKEN_RE.search(ids)
    if ref:
        return ref.group(1).lower(), "references"
    return None, None


def parse_reply(raw: bytes) -> ParsedReply:
    """Parse one RFC 5322 message (bytes as fetched over IMAP). Never raises."""
    problems: list[str] = []
    try:
        msg = _read(raw)
    except Exception as exc:  # the email package is lenient; this is a last resort
        return ParsedReply(message_id=_key(None, raw), problems=[f"unreadable message: {exc}"])
    if not _MSGID_RE.search(_header(msg, "Message-ID")):
        problems.append("no Message-ID; deduplicated by content hash")
    subject = _header(msg, "Subject")
    tag = _TAG_RE.search(subject)
    to_addrs = _addresses(msg, _ADDRESS_HEADERS)
    text = body_text(msg)
    if not text.strip():
        problems.append("no readable text body")
    token, source = find_token(msg, to_addrs, text)
    decision, line, in_quote, note = scan_decision(text)
    reason = auto_reply_reason(msg)
    if reason is not None:
        decision, line = None, None  # a machine's words are never a decision
    in_reply_to = _MSGID_RE.search(_header(msg, "In-Reply-To"))
    senders = _addresses(msg, ("From",))
    return ParsedReply(
        message_id=_key(msg, raw),
        in_reply_to=in_reply_to.group(0) if in_reply_to else None,
        references=_MSGID_RE.findall(_header(msg, "References")),
        from_addr=senders[0] if senders else "",
        to_addrs=to_addrs,
        subject=subject,
        incident_id=int(tag.group(1)) if tag else None,
        token=token,
        token_source=source,
        is_auto_reply=reason is not None,
        auto_reply_reason=reason,
        text=text,
        decision=decision,
        decision_line=line,
        decision_only_in_quote=in_quote,
        note_text=note,
        problems=problems,
    )
