"""Last lines of any log source (container:, process:, job:, file:) for tools and prompts."""

from __future__ import annotations

from datetime import datetime

from mcp_server.backends.logfiles import atail_file
from mcp_server.deps import Deps
from mcp_server.errors import InvalidInput
from mcp_server.safety.grep import compile_grep

SOURCES_HELP = (
    "container:NAME, process:NAME, job:ID (or another kind this server has a driver for) or "
    "file:/abs/path (files only under OPSMEDIC_LOG_ROOTS)"
)


async def read_source(
    deps: Deps,
    source: str,
    lines: int,
    since: datetime | None = None,
    grep: str | None = None,
    *,
    max_line_chars: int = 2000,
) -> tuple[list[str], str | None]:
    """(lines oldest first, note about anything cut) from one source; file lines longer than
    `max_line_chars` are cut with a marker."""
    kind, _, name = source.partition(":")
    if not name:
        raise InvalidInput(f"source {source!r} is not one of {SOURCES_HELP}")
    compile_grep(grep)  # refuse a bad pattern before any work, whatever the source
    if kind == "file":  # files are read-only sources under the log roots, not targets
        roots = deps.settings.log_roots
        result = await atail_file(
            name, lines, grep=grep, since=since, roots=roots, max_line_chars=max_line_chars
        )
        return result.lines, result.note
    if kind not in deps.services.drivers.kinds:
        raise InvalidInput(f"source {source!r} is not one of {SOURCES_HELP}")
    driver = deps.services.drivers.get(kind)
    return await driver.logs(name, lines, since=since, grep=grep, max_line_chars=max_line_chars)
