"""Last lines of any log source (container:, process:, job:, file:) for tools and prompts."""

from __future__ import annotations

from datetime import datetime

from mcp_server.backends.logfiles import atail_file
from mcp_server.deps import Deps
from mcp_server.errors import InvalidInput, NotFound, Unavailable
from mcp_server.safety.grep import compile_grep, grep_lines

SOURCES_HELP = (
    "container:NAME, process:NAME, job:ID or file:/abs/path (files only under OPSMEDIC_LOG_ROOTS)"
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
    if kind == "container":
        docker = deps.services.docker
        if docker is None:
            raise Unavailable("Docker watching is switched off in this server")
        got = await docker.logs(name, lines=lines, since=since)
        return grep_lines(got, grep)
    if kind == "job":
        return await _job_lines(deps, name, lines, grep)
    if kind == "process":
        sup = deps.services.processes
        if sup is None:
            raise NotFound("no managed processes are configured; add [[processes]] to the config")
        result = await atail_file(
            sup.log_path(name), lines, grep=grep, since=since, max_line_chars=max_line_chars
        )
    elif kind == "file":
        roots = deps.settings.log_roots
        result = await atail_file(
            name, lines, grep=grep, since=since, roots=roots, max_line_chars=max_line_chars
        )
    else:
        raise InvalidInput(f"source {source!r} is not one of {SOURCES_HELP}")
    return result.lines, result.note


async def _job_lines(
    deps: Deps, job_id: str, lines: int, grep: str | None
) -> tuple[list[str], str | None]:
    runs = await deps.store.list_runs(subject=job_id, limit=5)
    if not runs and await deps.store.get_job(job_id) is None:
        raise NotFound(f"no job {job_id!r}; read opsmedic://jobs for ids")
    collected: list[str] = []
    for run in runs:  # newest first; keep the newest lines
        collected = [f"[run {run.id}] {line}" for line in run.log] + collected
        if len(collected) >= lines:
            break
    kept, note = grep_lines(collected, grep)
    return kept[-lines:], note
