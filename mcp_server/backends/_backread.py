"""Reading a file backwards in blocks, line by line, with bounded memory (for logfiles)."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

_CONTINUATION_BYTES = bytes(range(0x80, 0xC0))


class _Line(NamedTuple):
    text: str  # decoded head of the line (what grep and since look at)
    shown: str  # text as returned: cut at max_line_chars with a marker
    cut: bool


@dataclass
class _Scan:
    """How to read (limits, a cheap per-block grep) and what happened while reading."""

    budget: int
    max_chars: int
    block: int
    block_filter: Any | None = None  # RE2 pattern
    deadline: float = float("inf")  # time.monotonic() value
    timed_out: bool = False
    used: int = 0
    stopped: bool = False
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _backward_lines(fd: int, size: int, scan: _Scan) -> Iterator[_Line]:
    max_chars = scan.max_chars
    keep = 4 * max_chars + 4  # enough bytes for max_chars characters of UTF-8
    partial = _Partial(keep)
    end = size - 1 if size and os.pread(fd, 1, size - 1) == b"\n" else size
    pos = end
    while pos > 0:
        if scan.used >= scan.budget or time.monotonic() >= scan.deadline:
            scan.timed_out = scan.used < scan.budget
            scan.stopped = True
            if partial.size:
                raw, dropped = partial.take(b"")
                line = _decode(raw, dropped, max_chars, keep)
                yield _Line(line.text, "…[line start not read] " + line.shown, True)
            return
        start = max(0, pos - scan.block)
        data = os.pread(fd, pos - start, start)
        if len(data) != pos - start:  # the file shrank under us (truncated): stop cleanly
            return
        scan.used += len(data)
        pos = start
        parts = data.split(b"\n")
        if len(parts) == 1:
            partial.prepend(data)
            continue
        yield _decode(*partial.take(parts[-1]), max_chars, keep)
        whole = parts[1:-1]  # lines that start and end inside this block
        if whole and (scan.block_filter is None or scan.block_filter.search(_joined(whole))):
            for raw in reversed(whole):
                yield _decode(raw, 0, max_chars, keep)
        partial.prepend(parts[0])
    if size:
        yield _decode(*partial.take(b""), max_chars, keep)


class _Partial:
    """The pieces read so far of a line being read backwards; keeps about its first
    `keep` bytes and only counts the characters of the rest (a 50 MB line stays cheap)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.frags: deque[bytes] = deque()  # in file order
        self.size = 0
        self.dropped_chars = 0

    def prepend(self, frag: bytes) -> None:
        self.frags.appendleft(frag)
        self.size += len(frag)
        while len(self.frags) > 1 and self.size - len(self.frags[-1]) >= self.keep:
            last = self.frags.pop()
            self.size -= len(last)
            self.dropped_chars += _count_chars(last)

    def take(self, head: bytes) -> tuple[bytes, int]:
        """The whole line, `head` being its start, and how many characters were dropped."""
        if not self.frags:
            return head, 0
        self.prepend(head)
        data, dropped = b"".join(self.frags), self.dropped_chars
        self.frags.clear()
        self.size = self.dropped_chars = 0
        return data, dropped


def _joined(lines: list[bytes]) -> str:
    # every line ends in "\n" (never "\r\n") so `$` sees the line ends tail_file sees
    return (b"\n".join(lines) + b"\n").replace(b"\r\n", b"\n").decode("utf-8", "replace")


def _count_chars(data: bytes) -> int:
    return len(data.translate(None, _CONTINUATION_BYTES))  # UTF-8 lead bytes = characters


def _decode(raw: bytes, dropped_chars: int, max_chars: int, keep: int) -> _Line:
    if not dropped_chars and raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) > keep:
        dropped_chars += _count_chars(raw[keep:])
        raw = raw[:keep]
    text = raw.decode("utf-8", "replace")
    if not dropped_chars and len(text) <= max_chars:
        return _Line(text, text, False)
    extra = max(0, len(text) - max_chars) + dropped_chars
    return _Line(text, f"{text[:max_chars]}…[+{extra} chars]", True)
