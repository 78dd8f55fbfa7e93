"""tail_logs(mode="summary") on real logs, scored; and summarize() on 10k noisy lines.

Usage: python bench/bench_summary.py [--logs DIR] [--budget N] [--runs 5] [-v]

1. Every log in DIR (default ../shared/diagnosis/logs, or $OPSMEDIC_DIAGNOSIS_DIR/logs) is read
   through the real tail_logs tool (in-process server, file: source) with its default budget
   (or --budget), and each output is scored with DIR/../score_summary.py: error-template
   recall and compression, per file and pooled, beside the naive baseline in BASELINE.tsv.
2. The generated 10k-line noisy log of tests/unit/test_logsummary.py: compression, every
   error/warning template kept, and the time of summarize() (median of --runs).
Numbers only; no assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from fastmcp import Client  # noqa: E402

from mcp_server.app import create_server  # noqa: E402
from mcp_server.backends.logsummary import summarize  # noqa: E402
from mcp_server.deps import Deps  # noqa: E402
from mcp_server.settings import Settings  # noqa: E402
from tests.unit.test_logsummary import noisy_log  # noqa: E402


def diagnosis_dir() -> Path:
    env = os.environ.get("OPSMEDIC_DIAGNOSIS_DIR")
    return Path(env) if env else (REPO / ".." / "shared" / "diagnosis").resolve()


async def summaries(logs: list[Path], budget: int | None) -> dict[Path, tuple[str, float]]:
    """Each log's summary through the tail_logs tool, and the tool call's time."""
    out: dict[Path, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), log_roots=[str(logs[0].parent)])
        deps = Deps.build(settings)
        await deps.start()
        try:
            async with Client(create_server(settings, deps, docker=False)) as client:
                for log in logs:
                    args: dict[str, Any] = {"source": f"file:{log}", "mode": "summary"}
                    if budget:
                        args["budget"] = budget
                    start = time.perf_counter()
                    result = await client.call_tool("tail_logs", args)
                    took = time.perf_counter() - start
                    out[log] = (str(result.structured_content["summary"]), took)
        finally:
            await deps.stop()
    return out


def score(scorer: Path, log: Path, text: str, verbose: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        cmd = [sys.executable, str(scorer), "--json", str(log), f.name]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        if verbose:
            miss = [sys.executable, str(scorer), "-v", str(log), f.name]
            print(subprocess.run(miss, capture_output=True, text=True).stdout)
    finally:
        os.unlink(f.name)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def real_logs(root: Path, budget: int | None, verbose: bool) -> None:
    logs = sorted((root / "logs").glob("*.log"))
    if not logs:
        print(f"no logs in {root / 'logs'}: real-log part skipped")
        return
    with open(root / "logs" / "BASELINE.tsv") as f:
        base = {r["file"]: r for r in csv.DictReader(f, dialect="excel-tab")}
    got = asyncio.run(summaries(logs, budget))
    head = ("tmpl", "recall", "compr", "base_rec", "base_cmp", "ms")
    print(f"{'file':48} " + " ".join(f"{h:>8}" for h in head))
    kept = total = chars_in = chars_out = 0
    worst = 1.0
    for log in logs:
        text, took = got[log]
        s = score(root / "score_summary.py", log, text, verbose)
        b = base.get(log.name, {})
        kept, total = kept + s["kept"], total + s["error_templates"]
        chars_in, chars_out = chars_in + s["input_chars"], chars_out + s["output_chars"]
        worst = min(worst, s["recall"])
        row = (
            f"{s['error_templates']:8d}",
            f"{s['recall']:8.3f}",
            f"{s['compression']:8.1f}",
            f"{float(b.get('baseline_recall', 'nan')):8.3f}",
            f"{float(b.get('baseline_compression', 'nan')):8.1f}",
            f"{took * 1e3:8.0f}",
        )
        print(f"{log.name[:48]:48} " + " ".join(row))
    base_kept = sum(int(r["baseline_kept"]) for r in base.values())
    base_total = sum(int(r["error_templates"]) for r in base.values())
    print(
        f"pooled: recall={kept / total:.3f} ({kept}/{total}) "
        f"compression={chars_in / chars_out:.1f}x worst_file_recall={worst:.3f}  "
        f"baseline: recall={base_kept / max(1, base_total):.3f}"
    )


def noisy(runs: int, budget: int | None) -> None:
    lines = noisy_log(10_000)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        summary = summarize(lines, **({"budget_chars": budget} if budget else {}))
        times.append(time.perf_counter() - start)
    text = summary.render()
    chars_in = sum(len(line) + 1 for line in lines)
    by = summary.templates_by_severity
    severe_kept = sum(t.severity != "info" for t in summary.templates)
    print(f"noisy 10k: lines={len(lines)} chars_in={chars_in} chars_out={len(text)}")
    print(f"compression_ratio={chars_in / len(text):.1f}")
    print(f"error_warning_templates_kept={severe_kept} of {by['error'] + by['warning']}")
    print(f"omitted_templates={summary.omitted_templates} omitted_lines={summary.omitted_lines}")
    print(f"time_median_ms={statistics.median(times) * 1e3:.1f} time_min_ms={min(times) * 1e3:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logs", type=Path, default=None, help="diagnosis dir (has logs/)")
    parser.add_argument("--budget", type=int, default=None, help="default: the tool's")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true", help="list missed templates")
    args = parser.parse_args()
    real_logs(args.logs or diagnosis_dir(), args.budget, args.verbose)
    noisy(args.runs, args.budget)


if __name__ == "__main__":
    main()
