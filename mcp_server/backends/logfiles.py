"""Read log files from the end: last N lines, grep, since, and one step into rotation.

The file is read backwards in blocks, so the cost grows with the lines returned (or, with
grep/since, with the bytes scanned, capped by a scan budget), never with the file size.
Lines are split on b"\\n"; a trailing "\\r" (CRLF) is dropped; invalid UTF-8 becomes U+FFFD.
A line longer than `max_line_chars` keeps its head plus a marker "…[+N chars]"; only its
first ~4*max_line_chars bytes are ever held in memory, however long it is.

Files are opened once, without following any symlink on the way (open_nofollow, or
open_under_roots with `roots`), and read through that descriptor only; a rotation sibling is
opened beside it through the directory's descriptor, also with O_NOFOLLOW. grep runs on RE2
(mcp_server.safety.grep) within a time budget, so no pattern can hold the worker thread.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import anyio.to_thread
from pydantic import BaseModel, Field

from mcp_server.backends._backread import _backward_lines, _Line, _Scan
from mcp_server.errors import InvalidInput, NotFound, OpsMedicError, Refused, Unavailable
from mcp_server.safety.grep import TIME_BUDGET_S, compile_grep
from mcp_server.safety.paths import OpenedFile, open_nofollow, open_under_roots

BLOCK_SIZE = 64 * 1024
SCAN_BUDGET = 64 * 1024 * 1024
MAX_LINES = 10_000
#: With `since`, stop looking for a timestamp after this many undated lines (undated file).
UNDATED_LIMIT = 5_000
_ROTATED_SUFFIX = re.compile(r"^[.\-_](?:\d{1,3}|\d{8,14}|\d{4}-\d{2}-\d{2}(?:[T_.-][\d:.-]+)?)$")


class TailResult(BaseModel):
    """The last lines of a log file, oldest first."""

    source: str
    lines: list[str] = Field(default_factory=list)
    files_read: list[str] = Field(default_factory=list)
    truncated: bool = False  # the scan budget stopped the search, or long lines were cut
    note: str | None = None  # what was cut or skipped, and what to do about it


class FileStamp(NamedTuple):
    """Size and identity of a file; a new inode or a smaller size means it was rotated."""

    size: int
    inode: int


# --- public API ---------------------------------------------------------------------------


def tail_file(
    path: str | os.PathLike[str] | OpenedFile,
    lines: int = 200,
    grep: str | None = None,
    since: datetime | None = None,
    max_line_chars: int = 2000,
    *,
    scan_budget: int = SCAN_BUDGET,
    block_size: int = BLOCK_SIZE,
    now: datetime | None = None,
    time_budget_s: float = TIME_BUDGET_S,
) -> TailResult:
    """Return the last `lines` lines of `path` (oldest first), reading from the end.

    path: a trusted path (symlinks in it are resolved once, then nothing is followed), or
    a file opened by open_under_roots (the caller closes it).
    grep: case-insensitive RE2 expression; the scan goes backwards until `lines` matches,
    `scan_budget` bytes were read or `time_budget_s` passed (then `truncated` is set and
    `note` says so).
    since: keep lines whose leading timestamp (ISO-8601 or syslog "Jan  2 15:04:05") is at
    or after it; undated lines (stack traces) follow the line before them; timestamps
    without a zone are taken as UTC; the file is assumed to be in time order.
    If the file has fewer matching lines than asked, the most recent uncompressed rotated
    sibling (app.log.1) is read too; `files_read` lists what was read.
    """
    _check_limits(lines, max_line_chars, block_size)
    collector = _Collector(
        want=lines, grep=compile_grep(grep), since=_aware(since), now=now or datetime.now(UTC)
    )
    scan = _Scan(scan_budget, max_line_chars, block_size, _block_filter(grep, since))
    scan.deadline = time.monotonic() + time_budget_s
    if isinstance(path, OpenedFile):
        _collect(path, scan, collector)
    else:
        with _open_trusted(os.fspath(path)) as opened:
            _collect(opened, scan, collector)
    collector.finish()
    notes = [*scan.notes, *collector.notes()]
    if scan.stopped:
        notes.insert(0, _budget_note(scan, len(collector.out), lines))
    return TailResult(
        source=os.fspath(path.path if isinstance(path, OpenedFile) else path),
        lines=collector.out[::-1],
        files_read=scan.files,
        truncated=scan.stopped or collector.cut_lines > 0,
        note="; ".join(notes) or None,
    )


async def atail_file(
    path: str | os.PathLike[str],
    lines: int = 200,
    grep: str | None = None,
    since: datetime | None = None,
    max_line_chars: int = 2000,
    *,
    scan_budget: int = SCAN_BUDGET,
    now: datetime | None = None,
    roots: Sequence[str] | None = None,
) -> TailResult:
    """tail_file in a worker thread, so the event loop never blocks on disk I/O. With
    `roots`, `path` is checked and opened under them (open_under_roots) in that thread.
    The thread never outlives its time budget: cancelling the call waits at most that long."""

    def run() -> TailResult:
        kw: dict[str, Any] = {"scan_budget": scan_budget, "now": now}
        if roots is None:
            return tail_file(path, lines, grep, since, max_line_chars, **kw)
        with _file_errors(os.fspath(path)):
            opened = open_under_roots(os.fspath(path), roots)
        with opened:
            result = tail_file(opened, lines, grep, since, max_line_chars, **kw)
        result.source = os.fspath(path)
        return result

    return await anyio.to_thread.run_sync(run)


def file_size_and_inode(path: str | os.PathLike[str]) -> FileStamp:
    """(size, inode) of `path`: a new inode or a smaller size means rotated or truncated."""
    with _file_errors(os.fspath(path)):
        st = os.stat(path)
    return FileStamp(size=st.st_size, inode=st.st_ino)


def parse_leading_timestamp(line: str, now: datetime) -> datetime | None:
    """The timestamp a log line starts with, as an aware datetime, or None.

    Understands ISO-8601 / RFC 3339 (also with a space, a comma before the fraction,
    nanoseconds, "/" between date parts, an RFC 5424 "<pri>1 " or "[" before it) and
    syslog "Mon dd HH:MM:SS" (year inferred from `now`). No zone means UTC.
    """
    m = _ISO_TS.match(line)
    try:
        if m:
            y, mo, d, h, mi, s, frac, zone = m.groups()
            micro = int((frac or "0")[:6].ljust(6, "0"))
            ts = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
            return ts.replace(tzinfo=_zone(zone))
        m = _SYSLOG_TS.match(line)
        if m:
            mon, d, h, mi, s = m.groups()
            ts = datetime(now.year, _MONTHS[mon], int(d), int(h), int(mi), int(s), tzinfo=UTC)
            return ts.replace(year=now.year - 1) if ts > now + timedelta(days=1) else ts
    except ValueError:  # 2024-13-45 and the like: not a timestamp after all
        return None
    return None


# --- timestamps ---------------------------------------------------------------------------

_ISO_TS = re.compile(
    r"\s*(?:<\d{1,3}>\d?\s*)?\[?(\d{4})[-/](\d{2})[-/](\d{2})[T ](\d{2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d{1,9}))?\s?(Z|[+-]\d{2}:?\d{2}(?!\d))?"
)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_SYSLOG_TS = re.compile(
    r"\s*(?:<\d{1,3}>)?\[?(" + "|".join(_MONTHS) + r") +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})"
)


def _zone(zone: str | None) -> timezone:
    if not zone or zone == "Z":
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _aware(since: datetime | None) -> datetime | None:
    if since is None or since.tzinfo is not None:
        return since
    return since.replace(tzinfo=UTC)


# --- arguments and errors -----------------------------------------------------------------


def _check_limits(lines: int, max_line_chars: int, block_size: int) -> None:
    if not 1 <= lines <= MAX_LINES:
        raise InvalidInput(f"lines must be between 1 and {MAX_LINES}, got {lines}")
    if not 16 <= max_line_chars <= 1_000_000:
        raise InvalidInput(f"max_line_chars must be between 16 and 1000000, got {max_line_chars}")
    if block_size < 1:
        raise InvalidInput(f"block_size must be positive, got {block_size}")


@contextmanager
def _file_errors(path: str) -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as exc:
        raise NotFound(f"no file {path!r}; check the path and that the file exists") from exc
    except PermissionError as exc:
        raise Refused(
            f"cannot read {path!r}: permission denied; grant the OpsMedic user read access"
        ) from exc
    except OSError as exc:
        raise Unavailable(f"cannot read {path!r}: {exc.strerror or exc}") from exc


def _budget_note(scan: _Scan, found: int, wanted: int) -> str:
    mib = scan.budget / (1024 * 1024)
    if scan.timed_out:
        return (
            f"stopped at the time budget after scanning {scan.used} bytes with {found} of "
            f"{wanted} lines found; narrow the search with `since` or a more specific `grep`"
        )
    return (
        f"stopped after scanning {scan.used} bytes (scan budget {mib:g} MiB) with {found} of "
        f"{wanted} lines found; narrow the search with `since` or a more specific `grep`"
    )


# --- opening and streaming ----------------------------------------------------------------


def _open_trusted(path: str) -> OpenedFile:
    """Open a path from configuration or a test: resolve its symlinks once, then open the
    result without following anything (nothing can be swapped in between unnoticed)."""
    with _file_errors(path):
        return open_nofollow(Path(os.path.realpath(path)))


def _collect(opened: OpenedFile, scan: _Scan, collector: _Collector) -> None:
    with closing(_stream(opened, scan)) as stream:
        for line in stream:
            if collector.add(line):
                break


def _stream(opened: OpenedFile, scan: _Scan) -> Generator[_Line, None, None]:
    """Lines of the file from the last backwards, then of its rotated sibling if pulled for."""
    yield from _file_lines(opened.fd, opened.path, scan)
    if scan.stopped:
        return
    name = _rotated_sibling(opened)
    if name is None:
        return
    sibling = opened.path.parent / name
    try:
        with _file_errors(str(sibling)):  # O_NOFOLLOW: a link swapped in is refused (ELOOP)
            fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW, dir_fd=opened.dir_fd)
        try:
            yield from _file_lines(fd, sibling, scan)
        finally:
            os.close(fd)
    except OpsMedicError as exc:  # the current file was fine; report the sibling, keep lines
        scan.notes.append(f"rotated file {sibling} was not read: {exc}")


def _rotated_sibling(opened: OpenedFile) -> str | None:
    """Name of the most recent uncompressed rotated copy: app.log.1, else the newest
    app.log-DATE, listed through the directory's descriptor (never a path lookup)."""
    base = opened.path.name
    found: list[tuple[float, str]] = []
    try:
        with os.scandir(opened.dir_fd) as entries:
            for entry in entries:
                rest = entry.name[len(base) :]
                if not entry.name.startswith(base) or not _ROTATED_SUFFIX.match(rest):
                    continue
                if entry.is_file(follow_symlinks=False):  # never follow a link out of the root
                    if rest == ".1":
                        return entry.name
                    found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    except OSError:
        return None
    return max(found)[1] if found else None


def _file_lines(fd: int, path: Path, scan: _Scan) -> Iterator[_Line]:
    with _file_errors(str(path)):
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{str(path)!r} is not a regular file; pass a log file")
        scan.files.append(str(path))
        yield from _backward_lines(fd, info.st_size, scan)


def _block_filter(grep: str | None, since: datetime | None) -> Any | None:
    """grep in MULTILINE mode over a whole block: no match there means no line matches,
    so the block's lines are skipped unseen. Not with `since`, which must see every line."""
    return compile_grep(grep, multiline=True) if grep and since is None else None


# --- choosing lines -----------------------------------------------------------------------


@dataclass
class _Collector:
    """Takes lines newest first; applies grep and since; knows when it has enough."""

    want: int
    grep: Any | None  # RE2 pattern
    since: datetime | None
    now: datetime
    out: list[str] = field(default_factory=list)  # newest first
    group: list[_Line] = field(default_factory=list)  # undated lines waiting for their stamp
    cut_lines: int = 0
    seen_timestamp: bool = False
    undated: int = 0
    undated_note: str | None = None

    def add(self, line: _Line) -> bool:
        """Take the next older line; True once no more lines are needed."""
        wanted = self.grep is None or self.grep.search(line.text) is not None
        if wanted and len(self.group) < self.want - len(self.out):
            self.group.append(line)
        if self.since is None:
            return self._flush()
        ts = parse_leading_timestamp(line.text, self.now)
        if ts is None:
            self.undated += 1
            if not self.seen_timestamp and self.undated >= UNDATED_LIMIT:
                self.undated_note = f"no timestamp in the last {UNDATED_LIMIT} lines"
                self._flush()
                return True
            return False
        self.seen_timestamp = True
        if ts < self.since:  # this line's group and everything older is before `since`
            self.group.clear()
            return True
        return self._flush()

    def finish(self) -> None:
        """End of input: lines with no dated line before them are kept."""
        if self.since is not None and not self.seen_timestamp and self.undated_note is None:
            self.undated_note = "no line starts with a recognised timestamp"
        self._flush()

    def notes(self) -> list[str]:
        notes = []
        if self.undated_note:
            notes.append(f"`since` was not applied: {self.undated_note}")
        if self.cut_lines:
            notes.append(f"{self.cut_lines} long lines were cut (marked '…[+N chars]')")
        return notes

    def _flush(self) -> bool:
        for line in self.group:
            self.out.append(line.shown)
            self.cut_lines += line.cut
        self.group.clear()
        return len(self.out) >= self.want
