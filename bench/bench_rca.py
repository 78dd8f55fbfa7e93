"""Rules RCA on real labelled failures, replayed through real containers; beside a grep.

Usage: python bench/bench_rca.py [--cases rca-dev.jsonl] [--offline] [--only SUBSTRING]

Every case of ../shared/diagnosis/rca-dev.jsonl (or $OPSMEDIC_DIAGNOSIS_DIR) runs as a busybox
container that prints its log and ends as the case ended (exit code, or a real OOM kill);
OpsMedic (in-process server + runner in check mode, rules advisor) opens the incident and
writes the RCA; the category is read back with get_incident (see tests/rca_replay.py).
Needs a Docker engine: $DOCKER_HOST / $OPSMEDIC_TEST_DOCKER_HOST, or a private one started
here. --offline skips Docker and calls the rules on the case's log and facts directly.

Prints accuracy per category beside a twelve-regex keyword baseline, the confusion list,
accuracy per confidence band, and the time per RCA. Numbers only; no assertion.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from agent_runner.rules import triage
from tests.rca_replay import diagnosis_dir, load_cases, replay

BANDS = ((0.0, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))

# What a person would grep for, first match wins: the baseline to beat.
KEYWORDS: tuple[tuple[str, str], ...] = (
    ("oom", r"out of memory|OOMKilled|oom-kill|exited with code 137"),
    ("oom", r"Cannot allocate memory|MemoryError|heap"),
    ("resource", r"No space left|disk full|quota"),
    ("port_conflict", r"address already in use|EADDRINUSE|port is already allocated"),
    ("permission", r"permission denied|EACCES|not permitted"),
    ("config", r"config|yaml|invalid"),
    ("config", r"not set|missing|required"),
    ("dependency", r"connection refused|ECONNREFUSED"),
    ("dependency", r"timed out|timeout|getaddrinfo|could not connect"),
    ("code", r"Traceback|Exception"),
    ("code", r"panic|segfault|Error:"),
    ("unknown", r"."),
)


def keyword_baseline(case: dict[str, Any]) -> str:
    text = case["log"] + (" OOMKilled" if case.get("oom_killed") else "")
    for category, pattern in KEYWORDS:
        if re.search(pattern, text, re.IGNORECASE):
            return category
    return "unknown"


def incident_of(case: dict[str, Any]) -> dict[str, Any]:
    """What the server's incident looks like for this case (used by --offline)."""
    if case.get("oom_killed"):
        return {"id": 1, "target": "container:c", "symptom": "oom", "detail": {}, "count": 1}
    code = case.get("exit_code") or 1
    return {"id": 1, "target": "container:c", "symptom": "died", "detail": {"exit_code": code}}


def offline(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for case in cases:
        evidence = [("container:c", line) for line in case["log"].splitlines()]
        out[case["id"]] = {"rca": triage(incident_of(case), evidence).model_dump(mode="json")}
    return out


def live(cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    import anyio
    import docker

    from bench._common import docker_engine
    from tests.services import ensure_busybox_image

    with docker_engine() as host, tempfile.TemporaryDirectory() as tmp:
        client = docker.DockerClient(base_url=host, timeout=60)
        image = ensure_busybox_image(client)
        try:
            return anyio.run(replay, client, image, cases, Path(tmp))
        finally:
            client.close()


def report(cases: list[dict[str, Any]], got: dict[str, dict[str, Any]]) -> None:
    total, ours, base = Counter(), Counter(), Counter()
    confusion, bands = [], Counter()
    band_ok = Counter()
    for case in cases:
        cat = case["category"]
        rca = (got.get(case["id"]) or {}).get("rca") or {}
        said, conf = rca.get("category", "missing"), float(rca.get("confidence", 0.0))
        total[cat] += 1
        ours[cat] += said == cat
        base[cat] += keyword_baseline(case) == cat
        band = next(b for b in BANDS if b[0] <= conf < b[1])
        bands[band] += 1
        band_ok[band] += said == cat
        if said != cat:
            first = (rca.get("evidence") or [{}])[0].get("line", "")[:90]
            confusion.append(f"  {case['id']:48} {cat:>13} -> {said:<13} {conf:.2f}  {first}")
    print(f"{'category':14} {'n':>3} {'rules':>7} {'keyword':>8}")
    for cat in sorted(total):
        n = total[cat]
        print(f"{cat:14} {n:3d} {ours[cat] / n:7.2f} {base[cat] / n:8.2f}")
    n = sum(total.values())
    print(f"{'overall':14} {n:3d} {sum(ours.values()) / n:7.3f} {sum(base.values()) / n:8.3f}")
    print(f"confusions ({len(confusion)}): id, expected -> got, confidence, first evidence")
    print("\n".join(confusion) or "  none")
    print("accuracy per confidence band:")
    for band in BANDS:
        if bands[band]:
            hi, acc = min(band[1], 1.0), band_ok[band] / bands[band]
            print(f"  [{band[0]:.1f}, {hi:.1f}) n={bands[band]:3d} acc={acc:.2f}")


def timing(cases: list[dict[str, Any]]) -> None:
    times = []
    for case in cases:
        evidence = [("container:c", line) for line in case["log"].splitlines()]
        start = time.perf_counter()
        triage(incident_of(case), evidence)
        times.append(time.perf_counter() - start)
    ms = sorted(t * 1e3 for t in times)
    print(f"rules time per RCA: median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=Path, default=None)
    parser.add_argument("--offline", action="store_true", help="no Docker: rules in-process")
    parser.add_argument("--only", default="", help="only cases whose id contains this")
    args = parser.parse_args()
    path = args.cases or diagnosis_dir() / "rca-dev.jsonl"
    if not path.exists():
        print(f"no cases at {path}: skipped")
        return
    cases = [c for c in load_cases(path) if args.only in c["id"]]
    start = time.perf_counter()
    got = offline(cases) if args.offline else live(cases)
    how = "offline (rules in-process)" if args.offline else "replayed through real containers"
    print(f"{len(cases)} cases, {how}, {time.perf_counter() - start:.1f} s")
    report(cases, got)
    timing(cases)


if __name__ == "__main__":
    main()
