"""`opsmedic hold TARGET --for 30m --reason ...` and `opsmedic release TARGET`.

They write to the store the server reads, through the same Holds service (audited with actor
``cli:<user>``, announced on the event feed), so a running OpsMedic sees the hold at once.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp_server.cli_views import opened
from mcp_server.core.events import EventBus
from mcp_server.core.holds import Holds, held_note, parse_until
from mcp_server.core.targets import Target
from mcp_server.errors import InvalidInput
from mcp_server.safety.audit import Auditor
from mcp_server.safety.redaction import Redactor
from mcp_server.settings import Settings

EXIT_INPUT = 2


def cli_actor() -> str:
    """``cli:<user>``: the login name, else $USER, else the uid (containers without passwd)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER") or f"uid{os.getuid()}"
    return f"cli:{user}"


@asynccontextmanager
async def holds_service(settings: Settings) -> AsyncIterator[Holds]:
    async with opened(settings) as store:
        auditor = Auditor(store, Redactor(settings.secret_values()), instance=settings.instance)
        yield Holds(store, auditor, EventBus(store))


def _bad(message: str) -> int:
    print(f"opsmedic: {message}", file=sys.stderr)
    return EXIT_INPUT


async def cmd_hold(
    settings: Settings, target: str, duration: str | None, reason: str | None
) -> int:
    """Exit 0 held, 2 on bad input (one line on stderr)."""
    if not duration:
        return _bad("say how long: --for 30m (or 2h, 1d, up to 7d, or an ISO-8601 UTC time)")
    if not reason or not reason.strip():
        return _bad('say why: --reason "db migration"')
    try:
        parsed = Target.parse(target)
        async with holds_service(settings) as holds:
            made = await holds.hold(
                parsed, reason, parse_until(duration, holds.now()), cli_actor(), source="cli"
            )
    except InvalidInput as exc:
        return _bad(str(exc))
    print(f"{made.target} {held_note(made)}")
    return 0


async def cmd_release(settings: Settings, target: str) -> int:
    """Exit 0 whether or not there was a hold (the message says which); 2 on bad input."""
    try:
        parsed = Target.parse(target)
        async with holds_service(settings) as holds:
            released = await holds.release(parsed, cli_actor(), source="cli")
    except InvalidInput as exc:
        return _bad(str(exc))
    if released:
        print(f"{parsed} released: policy may heal it again")
    else:
        print(f"{parsed} had no hold (a label opsmedic.hold=true ends only when removed)")
    return 0
