"""Who may receive mail: only addresses an operator named.

A recipient must be in OPSMEDIC_NOTIFY__TO, OPSMEDIC_APPROVERS or OPSMEDIC_NOTIFY__ALLOW
(addresses, or bare domains such as `example.com`). Each entry is one address, parsed by the
standard library's RFC 5322 parser (email.headerregistry); CR, LF, commas or a second address
in one entry are refused, so a `to` can never smuggle a header or a hidden recipient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.policy import default

from mcp_server.errors import InvalidInput, Refused

ALLOW_SETTINGS = "OPSMEDIC_NOTIFY__TO, OPSMEDIC_APPROVERS or OPSMEDIC_NOTIFY__ALLOW"


def parse_address(entry: str) -> str:
    """The bare address (`user@domain`, domain lowercased) of one entry such as
    `ops@example.com` or `Ops <ops@example.com>`; InvalidInput for anything else."""
    if not isinstance(entry, str) or not entry.strip():
        raise InvalidInput("empty recipient; pass one email address per entry")
    if any(ch in entry for ch in "\r\n\0") or any(ord(ch) < 32 for ch in entry):
        raise InvalidInput(
            f"recipient {entry!r} contains a line break or control character; "
            "pass one email address per entry"
        )
    try:
        header = default.header_factory("To", entry)
        addresses = header.addresses
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise InvalidInput(f"recipient {entry!r} is not a valid email address ({exc})") from None
    if header.defects or len(addresses) != 1:
        raise InvalidInput(f"recipient {entry!r} must be exactly one valid email address")
    addr: Address = addresses[0]
    if not addr.username or not addr.domain:
        raise InvalidInput(f"recipient {entry!r} needs a user and a domain, e.g. ops@example.com")
    return Address(username=addr.username, domain=addr.domain.lower()).addr_spec


class RecipientPolicy:
    """Checks `to` lists against the configured addresses and domains."""

    def __init__(self, notify_to: Sequence[str], approvers: Sequence[str], allow: Sequence[str]):
        self.addresses: set[str] = set()
        self.domains: set[str] = set()
        for entry in [*notify_to, *approvers, *allow]:
            entry = entry.strip()
            if "@" in entry.lstrip("@"):
                self.addresses.add(_casefold(parse_address(entry)))
            elif entry:
                self.domains.add(entry.lstrip("@").lower().rstrip("."))

    def check(self, recipients: Iterable[str]) -> list[str]:
        """The parsed recipients; Refused naming every address not allowed."""
        parsed = [parse_address(r) for r in recipients]
        refused = [a for a in parsed if not self.allows(a)]
        if refused:
            raise Refused(
                f"recipient(s) {', '.join(refused)} not allowed: mail goes only to addresses "
                f"or domains in {ALLOW_SETTINGS}; ask an operator to add them there"
            )
        return parsed

    def allows(self, address: str) -> bool:
        domain = address.rpartition("@")[2].lower()
        return _casefold(address) in self.addresses or domain in self.domains


def _casefold(address: str) -> str:
    return address.lower()
