"""tail_file on a 1 GiB log versus coreutils `tail -n 500` on the same file.

Usage: python bench/bench_tail.py [--runs 30] [--lines 500] [--keep] [--dir DIR]
The file is generated under DIR (default: the system temp dir) and reused when its size
matches; it is deleted at the end unless --keep. Prints numbers only.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mcp_server.backends.logfiles import tail_file

SIZE = 1024**3
CHUNK = 1024**2


def make_chunk(index: int) -> bytes:
    """Exactly 1 MiB of log lines ending in a newline."""
    lines, size, i = [], 0, 0
    while size < CHUNK - 200:
        line = (
            f"2024-05-01T00:{index % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z INFO [worker-{i % 8}] "
            f"chunk={index} seq={i} request GET /v1/items/{i * 7919 % 100000} status=200 "
            f"in {i % 997}ms\n"
        ).encode()
        lines.append(line)
        size += len(line)
        i += 1
    lines.append(b"#" * (CHUNK - size - 1) + b"\n")
    return b"".join(lines)


def ensure_file(path: Path) -> bool:
    """Create the 1 GiB file unless it already exists with the right size; True if made."""
    if path.exists() and path.stat().st_size == SIZE:
        return False
    chunks = [make_chunk(index) for index in range(16)]  # varied enough, quick to write
    with path.open("wb") as fh:
        for index in range(SIZE // CHUNK):
            fh.write(chunks[index % len(chunks)])
    return True


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p95(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "opsmedic-bench")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "tail-1g.log"
    coreutils = shutil.which("tail") or "tail"
    try:
        start = time.perf_counter()
        made = ensure_file(path)
        print(
            f"file_bytes={path.stat().st_size} generated={int(made)} "
            f"prepare_s={time.perf_counter() - start:.2f}"
        )
        ours = tail_file(path, args.lines, max_line_chars=100_000).lines
        theirs = (
            subprocess.run(
                [coreutils, "-n", str(args.lines), str(path)], capture_output=True, check=True
            )
            .stdout.decode()
            .splitlines()
        )
        print(f"same_output={int(ours == theirs)} lines={len(ours)}")
        mine = timed(lambda: tail_file(path, args.lines), args.runs)
        gnu = timed(
            lambda: subprocess.run(
                [coreutils, "-n", str(args.lines), str(path)],
                stdout=subprocess.DEVNULL,
                check=True,
            ),
            args.runs,
        )
        for name, values in (("tail_file", mine), ("coreutils_tail", gnu)):
            print(
                f"{name}_median_ms={statistics.median(values) * 1e3:.3f} "
                f"{name}_p95_ms={p95(values) * 1e3:.3f}"
            )
        print(f"ratio_median={statistics.median(mine) / statistics.median(gnu):.3f}")
        grep = timed(lambda: tail_file(path, args.lines, grep="no-such-line"), 3)
        print(f"grep_full_budget_scan_median_ms={statistics.median(grep) * 1e3:.1f}")
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
