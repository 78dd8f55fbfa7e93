"""tail_file against real files in tmp_path: edges of lines, grep, since, rotation, size."""

from __future__ import annotations

import os
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.backends.logfiles import (
    atail_file,
    file_size_and_inode,
    parse_leading_timestamp,
    tail_file,
)
from mcp_server.errors import InvalidInput, NotFound
from mcp_server.safety.grep import compile_grep

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def reference_tail(data: bytes, n: int) -> list[str]:
    """What tail -n means here: split on \\n, no empty line after a final \\n, CRLF -> LF."""
    text = data.decode("utf-8", "replace")
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts][-n:] if n else []


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_last_lines_of_a_small_file(tmp_path: Path) -> None:
    log = write(tmp_path / "a.log", "one\ntwo\nthree\n")
    assert tail_file(log, 2).lines == ["two", "three"]
    result = tail_file(log, 50)
    assert result.lines == ["one", "two", "three"]
    assert result.files_read == [str(log)] and not result.truncated and result.note is None
    assert result.source == str(log)


def test_last_lines_of_a_large_file_across_many_blocks(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    with log.open("w") as fh:
        for i in range(300_000):
            fh.write(f"2024-01-01T00:00:00Z INFO line {i} {'x' * (i % 97)}\n")
    got = tail_file(log, 500).lines
    assert len(got) == 500
    assert got[0].startswith("2024-01-01T00:00:00Z INFO line 299500 ")
    assert got[-1].startswith("2024-01-01T00:00:00Z INFO line 299999 ")
    assert got == reference_tail(log.read_bytes(), 500)


def test_missing_trailing_newline_crlf_and_empty_lines(tmp_path: Path) -> None:
    assert tail_file(write(tmp_path / "a", "a\nb\nc"), 2).lines == ["b", "c"]
    assert tail_file(write(tmp_path / "b", "a\r\nb\r\n\r\nc\r\n"), 3).lines == ["b", "", "c"]
    assert tail_file(write(tmp_path / "c", "x\n\n\n"), 5).lines == ["x", "", ""]
    assert tail_file(write(tmp_path / "d", ""), 5).lines == []
    assert tail_file(write(tmp_path / "e", "\n"), 5).lines == [""]


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    log = write(tmp_path / "bin.log", b"ok\n\xff\xfebad \xe2\x82 end\ncaf\xc3\xa9\n")
    assert tail_file(log, 3).lines == ["ok", "\ufffd\ufffdbad \ufffd end", "café"]


def test_long_line_is_cut_with_a_marker(tmp_path: Path) -> None:
    log = write(tmp_path / "l.log", "short\n" + "é" * 5000 + "\nlast\n")
    first, long, last = tail_file(log, 3, max_line_chars=100).lines
    assert (first, last) == ("short", "last")
    assert long == "é" * 100 + "…[+4900 chars]"
    result = tail_file(log, 3, max_line_chars=100)
    assert result.truncated and result.note and "1 long lines were cut" in result.note


def test_a_50mb_single_line_does_not_blow_up(tmp_path: Path) -> None:
    size = 50 * 1024 * 1024
    log = tmp_path / "huge.log"
    with log.open("wb") as fh:
        fh.write(b"before\nSTART")
        chunk = b"0123456789abcdef" * 4096
        for _ in range(size // len(chunk)):
            fh.write(chunk)
        fh.write(b"END\nafter\n")
    tracemalloc.start()
    try:
        result = tail_file(log, 3, max_line_chars=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    before, huge, after = result.lines
    assert (before, after) == ("before", "after")
    assert huge.startswith("START0123456789abcdef") and len(huge) < 2100
    assert huge.endswith(f"…[+{5 + size + 3 - 2000} chars]")
    assert peak < 8 * 1024 * 1024  # the line was never held whole
    assert result.truncated


def test_grep_is_a_case_insensitive_regex(tmp_path: Path) -> None:
    lines = [f"{'ERROR' if i % 10 == 0 else 'info'} event {i}" for i in range(1000)]
    log = write(tmp_path / "g.log", "\n".join(lines) + "\n")
    got = tail_file(log, 3, grep=r"error event \d+0$").lines
    assert got == ["ERROR event 970", "ERROR event 980", "ERROR event 990"]
    assert tail_file(log, 5, grep="no such thing").lines == []


def test_grep_anchors_work_on_crlf_lines_at_every_block_size(tmp_path: Path) -> None:
    log = write(tmp_path / "g.log", b"x\r\nfoo\r\nbar\r\nfoo\r\ny\r\n")
    for block in range(1, 30):
        assert tail_file(log, 5, grep="^foo$", block_size=block).lines == ["foo", "foo"]


def test_invalid_grep_names_the_regex_error(tmp_path: Path) -> None:
    log = write(tmp_path / "g.log", "x\n")
    with pytest.raises(InvalidInput, match="missing \\)"):
        tail_file(log, 5, grep="timeout (30s")


def test_grep_stops_at_the_scan_budget_and_says_so(tmp_path: Path) -> None:
    log = write(tmp_path / "g.log", "needle early\n" + "hay\n" * 100_000)
    result = tail_file(log, 5, grep="needle", scan_budget=64 * 1024, block_size=4096)
    assert result.lines == [] and result.truncated
    assert result.note and "scan budget" in result.note and "0 of 5" in result.note
    assert tail_file(log, 5, grep="needle").lines == ["needle early"]


def test_since_keeps_newer_records_with_their_continuation_lines(tmp_path: Path) -> None:
    t0 = datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    rows = []
    for i in range(100):
        rows.append(f"{(t0 + timedelta(minutes=i)).isoformat()} INFO tick {i}")
        if i % 10 == 9:
            rows += ["Traceback (most recent call last):", f'  File "x.py", line {i}']
    log = write(tmp_path / "s.log", "\n".join(rows) + "\n")
    got = tail_file(log, 1000, since=t0 + timedelta(minutes=88), now=NOW).lines
    assert got[0].endswith("INFO tick 88") and got[-1] == '  File "x.py", line 99'
    assert got[2:4] == ["Traceback (most recent call last):", '  File "x.py", line 89']
    naive = tail_file(log, 1000, since=datetime(2024, 6, 1, 11, 38), now=NOW).lines
    assert naive[0].endswith("tick 98")  # a naive `since` is UTC
    grep = tail_file(log, 1000, since=t0 + timedelta(minutes=88), grep="file", now=NOW)
    assert grep.lines == ['  File "x.py", line 89', '  File "x.py", line 99']


def test_since_with_syslog_and_offsets(tmp_path: Path) -> None:
    log = write(
        tmp_path / "syslog",
        "May 31 23:59:00 host app[1]: old\nJun  1 11:00:00 host app[1]: new\n"
        "no stamp continuation\n",
    )
    since = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)
    assert tail_file(log, 10, since=since, now=NOW).lines == [
        "Jun  1 11:00:00 host app[1]: new",
        "no stamp continuation",
    ]
    plus2 = timezone(timedelta(hours=2))
    assert parse_leading_timestamp("2024-06-01 12:00:00,5+02:00 x", NOW) == datetime(
        2024, 6, 1, 12, 0, 0, 500000, tzinfo=plus2
    )
    assert parse_leading_timestamp("<34>1 2024-06-01T10:00:00.123456789Z h", NOW) == datetime(
        2024, 6, 1, 10, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_leading_timestamp("[2024/06/01 10:00:00] x", NOW) == datetime(
        2024, 6, 1, 10, tzinfo=UTC
    )
    assert parse_leading_timestamp("Dec 31 23:00:00 h x", NOW).year == 2023  # type: ignore[union-attr]
    assert parse_leading_timestamp("2024-13-45 10:00:00 x", NOW) is None
    assert parse_leading_timestamp("hello 2024-06-01T10:00:00Z", NOW) is None


def test_since_on_an_undated_file_is_not_applied_and_says_so(tmp_path: Path) -> None:
    log = write(tmp_path / "u.log", "a\nb\nc\n")
    result = tail_file(log, 10, since=NOW, now=NOW)
    assert result.lines == ["a", "b", "c"]
    assert result.note and "`since` was not applied" in result.note


def test_rotation_continues_into_the_dot1_sibling(tmp_path: Path) -> None:
    write(tmp_path / "app.log.1", "".join(f"old {i}\n" for i in range(10)))
    write(tmp_path / "app.log.2.gz", b"\x1f\x8b compressed, never read")
    log = write(tmp_path / "app.log", "new 0\nnew 1\nnew 2\n")
    result = tail_file(log, 5)
    assert result.lines == ["old 8", "old 9", "new 0", "new 1", "new 2"]
    assert result.files_read == [str(log), str(tmp_path / "app.log.1")]
    assert tail_file(log, 3).files_read == [str(log)]  # enough lines: the sibling is not opened
    grep = tail_file(log, 3, grep="old [1-3]")
    assert grep.lines == ["old 1", "old 2", "old 3"]


def test_rotation_picks_a_dated_sibling_and_never_follows_a_symlink(tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.txt", "secret\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    log = write(logs / "app.log", "new\n")
    (logs / "app.log.1").symlink_to(outside)
    assert tail_file(log, 5).lines == ["new"]
    write(logs / "app.log-20240530", "older\n")
    os.utime(logs / "app.log-20240530", (1_700_000_000, 1_700_000_000))
    write(logs / "app.log-20240531", "recent\n")
    write(logs / "app.log.pos", "not a rotation\n")
    assert tail_file(log, 5).lines == ["recent", "new"]


def test_sparse_4gib_file(tmp_path: Path) -> None:
    log = tmp_path / "sparse.log"
    with log.open("wb") as fh:
        fh.truncate(4 * 1024**3)
        fh.seek(0, os.SEEK_END)
        fh.write(b"".join(f"tail line {i}\n".encode() for i in range(20)))
    assert log.stat().st_size > 4 * 1024**3
    result = tail_file(log, 5)
    assert result.lines == [f"tail line {i}" for i in range(15, 20)]
    assert not result.truncated


def test_sparse_file_zero_run_is_cut_by_the_budget(tmp_path: Path) -> None:
    log = tmp_path / "sparse.log"
    with log.open("wb") as fh:
        fh.truncate(256 * 1024**2)
        fh.seek(0, os.SEEK_END)
        fh.write(b"\nlast\n")
    result = tail_file(log, 3, scan_budget=1024**2)
    assert result.lines[-1] == "last" and result.truncated
    assert result.lines[0].startswith("…[line start not read] \x00")


def test_errors_for_missing_files_directories_and_fifos(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no file"):
        tail_file(tmp_path / "missing.log")
    with pytest.raises(InvalidInput, match="not a regular file"):
        tail_file(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(InvalidInput, match="not a regular file"):
        tail_file(tmp_path / "pipe")  # must not block
    log = write(tmp_path / "a.log", "x\n")
    for bad in ({"lines": 0}, {"lines": 10**6}, {"max_line_chars": 1}):
        with pytest.raises(InvalidInput):
            tail_file(log, **bad)  # type: ignore[arg-type]


def test_file_size_and_inode_detects_rotation(tmp_path: Path) -> None:
    log = write(tmp_path / "a.log", "x\n")
    before = file_size_and_inode(log)
    assert before.size == 2
    log.rename(tmp_path / "a.log.1")
    write(tmp_path / "a.log", "")
    after = file_size_and_inode(log)
    assert after.inode != before.inode and after.size == 0
    with pytest.raises(NotFound):
        file_size_and_inode(tmp_path / "nope")


async def test_atail_file_runs_in_a_thread(tmp_path: Path) -> None:
    log = write(tmp_path / "a.log", "a\nb\n")
    assert (await atail_file(log, 1)).lines == ["b"]


_CHUNKS = st.sampled_from(
    [b"a", b"bc", b"\n", b"\r", b"\r\n", b"\xff", b"\xc3\xa9", b"\xe2\x82", b" "]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(_CHUNKS, max_size=80),
    n=st.integers(min_value=1, max_value=30),
    block=st.integers(min_value=1, max_value=17),
)
def test_property_tail_equals_python_split(
    tmp_path: Path, chunks: list[bytes], n: int, block: int
) -> None:
    data = b"".join(chunks)
    log = write(tmp_path / "p.log", data)
    got = tail_file(log, n, block_size=block, max_line_chars=100_000).lines
    assert got == reference_tail(data, n)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(_CHUNKS, max_size=80),
    n=st.integers(min_value=1, max_value=30),
    block=st.integers(min_value=1, max_value=17),
    grep=st.sampled_from(["a$", "^b", "A", r"\bbc", "é$", r"a\s*$", "^$", r"c\r?$"]),
)
def test_property_grep_equals_filtering_python_lines(
    tmp_path: Path, chunks: list[bytes], n: int, block: int, grep: str
) -> None:
    data = b"".join(chunks)
    log = write(tmp_path / "p.log", data)
    pattern = compile_grep(grep)  # RE2, as tail_file uses (its \b is ASCII-only)
    want = [line for line in reference_tail(data, 10**6) if pattern.search(line)][-n:]
    got = tail_file(log, n, grep=grep, block_size=block, max_line_chars=100_000).lines
    assert got == want
