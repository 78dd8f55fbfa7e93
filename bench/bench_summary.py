"""tail_logs(mode="summary") on real logs, scored; and summarize() on 10k noisy lines.

Usage: python bench/bench_summary.py [--logs DIR] [--split NAME] [--budget N] [--runs 5] [-v]

1. Every log of a set is read through the real tail_logs tool (in-process server, file:
   source) with its default budget (or --budget), and each output is scored with the
   diagnosis kit's score_summary.py: error-template recall and compression, per file and
   pooled, beside the naive baseline (first 40 + last 40 lines). A set is a folder of *.log
   files: the diagnosis kit's logs/ (default: ../shared/diagnosis, or
   $OPSMEDIC_DIAGNOSIS_DIR; --logs DIR with a logs/ folder), or any folder of logs (--logs
   bench/data/heldout-logs). The baseline comes from the set's BASELINE.tsv, or is computed
   with `score_summary.py --baseline` when there is none. A `split` column in the set's
   MANIFEST.tsv gives pooled figures per split; --split NAME scores only that split (tune on
   one split, read the other only at the end).
2. The generated 10k-line noisy log of tests/unit/test_logsummary.py: compression, every
   error/warning template kept, and the time of summarize() (median of --runs; --runs 0
   skips it).
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
from dataclasses import dataclass
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


@dataclass
class LogSet:
    """A folder of *.log files, the scorer, and each file's split (MANIFEST.tsv `split`)."""

    folder: Path
    scorer: Path
    splits: dict[str, str]

    @classmethod
    def at(cls, path: Path | None) -> LogSet:
        kit = diagnosis_dir()
        path = (path or kit).resolve()
        folder = path / "logs" if (path / "logs").is_dir() else path
        scorer = path / "score_summary.py"
        scorer = scorer if scorer.is_file() else kit / "score_summary.py"
        splits: dict[str, str] = {}
        if (folder / "MANIFEST.tsv").is_file():
            splits = {r["file"]: r.get("split") or "all" for r in _tsv(folder / "MANIFEST.tsv")}
        return cls(folder, scorer, splits)

    def logs(self, split: str | None) -> list[Path]:
        logs = sorted(self.folder.glob("*.log"))
        return [p for p in logs if split is None or self.splits.get(p.name, "all") == split]

    def baseline(self, logs: list[Path]) -> dict[str, tuple[int, int, float]]:
        """(kept, templates, compression) of the naive summary, per file name."""
        if (self.folder / "BASELINE.tsv").is_file():
            rows = _tsv(self.folder / "BASELINE.tsv")
            return {
                r["file"]: (
                    int(r["baseline_kept"]),
                    int(r["error_templates"]),
                    float(r["baseline_compression"]),
                )
                for r in rows
            }
        cmd = [sys.executable, str(self.scorer), "--baseline", "--json", *map(str, logs)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out = {}
        for line in res.stdout.splitlines():
            d = json.loads(line)
            out[Path(d["file"]).name] = (d["kept"], d["error_templates"], d["compression"])
        return out


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, dialect="excel-tab"))


@dataclass
class _Pool:
    kept: int = 0
    total: int = 0
    chars_in: int = 0
    chars_out: int = 0
    base_kept: int = 0
    base_out: float = 0.0
    worst: tuple[float, str] = (1.0, "-")

    def add(self, name: str, s: dict[str, Any], base: tuple[int, int, float] | None) -> None:
        self.kept, self.total = self.kept + s["kept"], self.total + s["error_templates"]
        self.chars_in += s["input_chars"]
        self.chars_out += s["output_chars"]
        self.worst = min(self.worst, (s["recall"], name))
        if base:
            self.base_kept += base[0]
            self.base_out += s["input_chars"] / base[2]

    def line(self, label: str) -> str:
        recall = self.kept / max(1, self.total)
        base = self.base_kept / max(1, self.total)
        base_cmp = self.chars_in / max(1.0, self.base_out)
        return (
            f"{label}: recall={recall:.3f} ({self.kept}/{self.total}) "
            f"compression={self.chars_in / max(1, self.chars_out):.1f}x "
            f"worst_file_recall={self.worst[0]:.3f} ({self.worst[1]})  "
            f"baseline: recall={base:.3f} compression={base_cmp:.1f}x"
        )


def real_logs(logset: LogSet, split: str | None, budget: int | None, verbose: bool) -> None:
    logs = logset.logs(split)
    if not logs:
        print(f"no logs in {logset.folder} (split {split or 'any'}): real-log part skipped")
        return
    base = logset.baseline(logs)
    got = asyncio.run(summaries(logs, budget))
    head = ("tmpl", "recall", "compr", "base_rec", "base_cmp", "ms")
    print(f"{'file':48} {'split':>5} " + " ".join(f"{h:>8}" for h in head))
    pools: dict[str, _Pool] = {}
    for log in logs:
        text, took = got[log]
        s = score(logset.scorer, log, text, verbose)
        b = base.get(log.name)
        name = logset.splits.get(log.name, "all")
        for key in {"pooled", name}:
            pools.setdefault(key, _Pool()).add(log.name, s, b)
        row = (
            f"{s['error_templates']:8d}",
            f"{s['recall']:8.3f}",
            f"{s['compression']:8.1f}",
            f"{b[0] / max(1, b[1]) if b else float('nan'):8.3f}",
            f"{b[2] if b else float('nan'):8.1f}",
            f"{took * 1e3:8.0f}",
        )
        print(f"{log.name[:48]:48} {name[:5]:>5} " + " ".join(row))
    splits = sorted(k for k in pools if k != "pooled")
    for key in splits if len(splits) > 1 else []:
        print(pools[key].line(f"split {key}"))
    print(pools["pooled"].line("pooled"))


def noisy(runs: int, budget: int | None) -> None:
    if runs < 1:
        return
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
    parser.add_argument(
        "--logs", type=Path, default=None, help="a diagnosis dir (has logs/) or a folder of logs"
    )
    parser.add_argument("--split", default=None, help="only the logs of this MANIFEST split")
    parser.add_argument("--budget", type=int, default=None, help="default: the tool's")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("-v", "--verbose", action="store_true", help="list missed templates")
    args = parser.parse_args()
    real_logs(LogSet.at(args.logs), args.split, args.budget, args.verbose)
    noisy(args.runs, args.budget)


if __name__ == "__main__":
    main()
