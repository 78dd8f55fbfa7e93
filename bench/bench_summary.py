"""summarize() on 10k noisy log lines: compression, templates kept, time. Numbers only.

Usage: python bench/bench_summary.py [--lines 10000] [--budget 6000] [--runs 5]
Uses the same generated log as tests/unit/test_logsummary.py (~40 info templates,
15 rare error/warning templates).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from mcp_server.backends.logsummary import summarize
from tests.unit.test_logsummary import noisy_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    lines = noisy_log(args.lines)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        summary = summarize(lines, budget_chars=args.budget)
        times.append(time.perf_counter() - start)
    text = summary.render()
    chars_in = sum(len(line) + 1 for line in lines)
    by = summary.templates_by_severity
    severe_total = by["error"] + by["warning"]
    severe_kept = sum(t.severity != "info" for t in summary.templates)
    print(f"lines={len(lines)} chars_in={chars_in} chars_out={len(text)} budget={args.budget}")
    print(f"compression_ratio={chars_in / len(text):.1f}")
    print(f"templates_total={summary.templates_total} templates_kept={len(summary.templates)}")
    print(
        f"error_warning_templates_kept={severe_kept} error_warning_templates_total={severe_total}"
    )
    print(f"omitted_templates={summary.omitted_templates} omitted_lines={summary.omitted_lines}")
    print(f"time_median_ms={statistics.median(times) * 1e3:.1f} time_min_ms={min(times) * 1e3:.1f}")


if __name__ == "__main__":
    main()
