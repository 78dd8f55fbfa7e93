"""Approval tokens nobody can forge, and the desk that turns a reply into a decision.

A token binds one person's yes/no to one exact action. Layout, 30 bytes written as 48
lowercase base32 characters without padding (decoded case-insensitively, because mail
systems and people change the case of address local parts)::

    nonce     10 bytes  random; its base32 form (16 chars) is the Approval id
    expiry     4 bytes  big-endian unix seconds
    incident   4 bytes  big-endian incident id, 0 = none; in clear, so that a token for
                        another incident is told apart from a forged one
    tag       12 bytes  HMAC-SHA256(secret, [v1, incident, action hash, approver (lower-cased),
                        nonce, expiry])[:12]

Security margin: the tag is HMAC-SHA256 truncated to 96 bits. Forging one without the secret
means guessing: 2**-96 per try, so even a million forged replies a second would need about
10**15 years for an even chance; every try is also a mail that is audited and rejected. On
top, the 80-bit nonce must name a pending approval in the store. The whole reply address
``ops+<48 chars>@domain`` keeps the local part within the 64 octets RFC 5321 allows for
mailbox names up to 15 characters.

What a token does not prove: who sent the mail. The desk checks that the sender is an
approver and is the one the token was issued to; rely on your mail system (SPF/DKIM/DMARC)
to stop forged From headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any, Literal

from mcp_server.errors import InvalidInput
from mcp_server.models import Approval
from mcp_server.store.base import canonical_json

DEFAULT_TTL_S = 1800.0
NONCE_BYTES = 10
TAG_BYTES = 12
TOKEN_CHARS = 48  # (10 + 4 + 4 + 12) bytes * 8 / 5
APPROVAL_ID_CHARS = 16
MAX_LOCAL_PART = 64
#: Message-ID prefix of approval requests; mail_parse finds tokens in References by it.
TOKEN_MSGID_PREFIX = "opsmedic-approval."
_LAYOUT = struct.Struct(f">{NONCE_BYTES}sII{TAG_BYTES}s")
_TOKEN_RE = re.compile(rf"^[a-z2-7]{{{TOKEN_CHARS}}}$")
_ID_RE = re.compile(rf"^[a-z2-7]{{{APPROVAL_ID_CHARS}}}$")

VerdictReason = Literal[
    "malformed", "bad_mac", "expired", "wrong_incident", "action_changed", "not_approver"
]
RejectReason = Literal[
    "malformed",
    "bad_mac",
    "expired",
    "wrong_incident",
    "action_changed",
    "not_approver",
    "reused",
    "unknown_approval",
    "bad_decision",
]

_EXPLAIN: dict[str, str] = {
    "malformed": "the token is not a well-formed OpsMedic approval token",
    "bad_mac": "the token was altered or forged (signature does not match)",
    "expired": "the approval request expired; ask for a new one",
    "wrong_incident": "the token belongs to a different incident",
    "action_changed": "the action changed since approval was requested; a new request is needed",
    "not_approver": "the sender is not the approver this request was sent to",
    "reused": "this approval was already decided; a token is usable once",
    "unknown_approval": "no such approval request is on record",
    "bad_decision": "the decision must be approve or deny",
}


def explain(reason: str) -> str:
    """One sentence for the audit and the incident thread."""
    return _EXPLAIN.get(reason, reason)


def action_hash(tool: str, args: dict[str, Any], target: str) -> str:
    """sha256 hex over canonical JSON of {tool, args, target}: the exact action approved."""
    body = canonical_json({"tool": tool, "args": args, "target": target})
    return hashlib.sha256(body.encode()).hexdigest()


def normalize_address(addr: str) -> str:
    """Bare lower-cased address from ``Name <a@b>`` or ``a@b``; "" when there is none."""
    bare = parseaddr(addr or "")[1].strip().lower()
    return bare if "@" in bare else ""


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


@dataclass(frozen=True)
class TokenParts:
    """A decoded token; nothing here is trusted until the tag is checked."""

    nonce: bytes
    expiry: int
    incident_id: int | None
    tag: bytes

    @property
    def approval_id(self) -> str:
        return _b32(self.nonce)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expiry, UTC)


@dataclass(frozen=True)
class Verdict:
    """Result of checking a token: ok, or the precise reason it does not hold."""

    ok: bool
    reason: VerdictReason | None = None
    approval_id: str | None = None
    incident_id: int | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, parts: TokenParts, reason: VerdictReason | None) -> Verdict:
        return cls(
            ok=reason is None,
            reason=reason,
            approval_id=parts.approval_id,
            incident_id=parts.incident_id,
            expires_at=parts.expires_at,
        )

    @property
    def message(self) -> str:
        return "token is valid" if self.ok else explain(self.reason or "malformed")


class ApprovalTokens:
    """Issue and verify HMAC-SHA256 approval tokens (see the module docstring for the layout)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise InvalidInput("the approval secret must be at least 16 bytes; set OPSMEDIC_SECRET")
        self._secret = secret

    def _tag(self, incident: int, action_hash: str, approver: str, nonce: bytes, exp: int) -> bytes:
        body = json.dumps(["v1", incident, action_hash, approver.lower(), nonce.hex(), exp])
        return hmac.new(self._secret, body.encode(), hashlib.sha256).digest()[:TAG_BYTES]

    def issue(
        self,
        incident_id: int | None,
        action_hash: str,
        approver: str,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        now: datetime,
        action: dict[str, Any] | None = None,
    ) -> tuple[str, Approval]:
        """A new token and the pending Approval it names (not yet stored)."""
        incident = incident_id or 0
        if not 0 <= incident < 2**32:
            raise InvalidInput(f"incident id {incident_id} does not fit an approval token")
        who = normalize_address(approver)
        if not who:
            raise InvalidInput(f"approver {approver!r} is not an email address")
        nonce = secrets.token_bytes(NONCE_BYTES)
        exp = int(now.timestamp() + ttl_s)
        tag = self._tag(incident, action_hash, who, nonce, exp)
        token = _b32(_LAYOUT.pack(nonce, exp, incident, tag))
        approval = Approval(
            id=_b32(nonce),
            incident_id=incident_id or None,
            action_hash=action_hash,
            action=action or {},
            approver=who,
            expires_at=datetime.fromtimestamp(exp, UTC),
            created_at=now,
        )
        return token, approval

    @staticmethod
    def parse(token: str) -> TokenParts | None:
        """Decode a token in any letter case; None when it is not token-shaped."""
        text = (token or "").strip().lower()
        if not _TOKEN_RE.match(text):
            return None
        try:
            raw = base64.b32decode(text.upper())
        except (binascii.Error, ValueError):
            return None
        nonce, exp, incident, tag = _LAYOUT.unpack(raw)
        return TokenParts(nonce, exp, incident or None, tag)

    def authentic(self, parts: TokenParts, action_hash: str, approver: str) -> bool:
        """True when the tag matches these action hash and approver (constant-time compare)."""
        expected = self._tag(
            parts.incident_id or 0, action_hash, approver, parts.nonce, parts.expiry
        )
        return hmac.compare_digest(expected, parts.tag)

    def verify(
        self,
        token: str,
        incident_id: int | None,
        action_hash: str,
        approver: str,
        now: datetime,
        *,
        issued_to: str | None = None,
        issued_action_hash: str | None = None,
    ) -> Verdict:
        """Check a token for this incident, action and approver at time ``now``.

        ``incident_id`` None skips the incident check. ``issued_to`` and
        ``issued_action_hash`` (from the stored approval) let a genuine token for another
        approver or a since-changed action be reported as not_approver / action_changed
        instead of bad_mac. Order: malformed, bad_mac, wrong_incident, not_approver,
        action_changed, expired.
        """
        parts = self.parse(token)
        if parts is None:
            return Verdict(ok=False, reason="malformed")
        who = normalize_address(approver) or approver.strip().lower()
        hashes = dict.fromkeys([action_hash, issued_action_hash or action_hash])
        people = dict.fromkeys([who, normalize_address(issued_to or "") or who])
        match = next(((h, p) for h in hashes for p in people if self.authentic(parts, h, p)), None)
        if match is None:
            return Verdict.of(parts, "bad_mac")
        reason: VerdictReason | None = None
        if incident_id is not None and parts.incident_id != (incident_id or None):
            reason = "wrong_incident"
        elif match[1] != who:
            reason = "not_approver"
        elif match[0] != action_hash:
            reason = "action_changed"
        elif now.timestamp() >= parts.expiry:
            reason = "expired"
        return Verdict.of(parts, reason)


# --- where tokens travel ----------------------------------------------------------------


def reply_to_address(base: str, token: str) -> str:
    """``ops@example.test`` + token -> ``ops+<token>@example.test`` (any old +tag replaced)."""
    bare = normalize_address(base)
    if not bare:
        raise InvalidInput(f"reply address {base!r} is not an email address like ops@example.test")
    local, _, domain = bare.rpartition("@")
    local = local.split("+", 1)[0]
    if len(local) + 1 + len(token) > MAX_LOCAL_PART:
        raise InvalidInput(
            f"mailbox name {local!r} is too long to carry an approval token "
            f"(at most {MAX_LOCAL_PART - 1 - len(token)} characters); use a shorter address"
        )
    return f"{local}+{token.lower()}@{domain}"


def token_from_address(addr: str) -> str | None:
    """The token in a plus-address (any letter case), or None."""
    bare = normalize_address(addr)
    local = bare.rpartition("@")[0]
    if "+" not in local:
        return None
    tag = local.split("+", 1)[1].lower()
    return tag if _TOKEN_RE.match(tag) else None


def token_message_id(token: str, domain: str) -> str:
    """A Message-ID carrying the token, for References: ``<opsmedic-approval.TOKEN@domain>``."""
    return f"<{TOKEN_MSGID_PREFIX}{token.lower()}@{domain}>"
