"""grep patterns from clients: linear time (RE2), bounded length, a time budget per call.

Python's `re` backtracks: `(a+)+$` on 28 `a`s and a `!` takes tens of seconds and holds a
worker thread that no client can stop. RE2 matches in time linear in the text, so every
source (files, containers, processes, jobs) compiles client patterns here. What RE2 cannot
do (backreferences, lookaround) is refused with a message that says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import re2

from mcp_server.errors import InvalidInput

#: Longest grep pattern accepted, for every source.
MAX_PATTERN_CHARS = 1000
#: Wall-clock budget of one grep call; the scan stops (and says so) when it is spent.
TIME_BUDGET_S = 3.0
_UNSUPPORTED = (
    "RE2 (linear-time) syntax does not support backreferences (\\1), lookahead/lookbehind "
    "((?=...), (?!...), (?<=...), (?<!...)), atomic groups or possessive quantifiers"
)


def compile_grep(pattern: str | None, *, multiline: bool = False) -> Any | None:
    """A case-insensitive RE2 pattern for `pattern`, None for no pattern; InvalidInput for
    a pattern too long or that RE2 cannot compile (the message says what is unsupported)."""
    if not pattern:
        return None
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidInput(
            f"grep is longer than {MAX_PATTERN_CHARS} characters; pass a shorter pattern"
        )
    options = re2.Options()
    options.log_errors = False  # the client gets the reason; stderr stays quiet
    options.case_sensitive = False
    try:
        return re2.compile(("(?m)" if multiline else "") + pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise InvalidInput(
            f"grep {pattern!r} is not a valid regular expression here ({reason}). "
            f"{_UNSUPPORTED}; escape special characters such as ( [ * + ? with a backslash, "
            r"e.g. 'timeout \(30s\)'"
        ) from None


class Deadline:
    """A monotonic deadline; `expired()` is cheap enough to call per block or per line."""

    def __init__(self, budget_s: float = TIME_BUDGET_S) -> None:
        self.budget_s = budget_s
        self.at = time.monotonic() + budget_s

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def note(self) -> str:
        return (
            f"grep stopped at its time budget ({self.budget_s:g} s); narrow the search with "
            "`since`, fewer `lines` or a more specific `grep`"
        )


def grep_lines(
    lines: Iterable[str], pattern: str | None, budget_s: float = TIME_BUDGET_S
) -> tuple[list[str], str | None]:
    """(matching lines, note if the time budget stopped the scan). Lines are kept in order."""
    compiled = compile_grep(pattern)
    if compiled is None:
        return list(lines), None
    deadline = Deadline(budget_s)
    out: list[str] = []
    for i, line in enumerate(lines):
        if i % 256 == 0 and deadline.expired():
            return out, deadline.note()
        if compiled.search(line):
            out.append(line)
    return out, None
