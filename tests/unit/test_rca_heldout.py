"""The held-out RCA cases (tests/data/rca-heldout-*.jsonl): well-formed, split as documented,
disjoint from the dev set, and every one gets a valid rules RCA.

Accuracy is not asserted here: it is a measurement (bench/bench_rca.py --cases ...).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import pytest

from agent_runner.rules import MAX_EVIDENCE, MAX_LINE_CHARS, triage
from mcp_server.models import RcaCategory

DATA = Path(__file__).resolve().parents[1] / "data"
HALVES = ("tune", "test")
PREFIX = {
    "oom": "oom",
    "cfg": "config",
    "dep": "dependency",
    "res": "resource",
    "code": "code",
    "perm": "permission",
    "port": "port_conflict",
    "unk": "unknown",
}
FIELDS = {"id", "service", "category", "exit_code", "oom_killed", "log", "source", "why"}


def load(name: str) -> list[dict[str, Any]]:
    text = (DATA / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


HELDOUT = {half: load(f"rca-heldout-{half}.jsonl") for half in HALVES}
ALL = HELDOUT["tune"] + HELDOUT["test"]


def incident_of(case: dict[str, Any]) -> dict[str, Any]:
    """The incident the server opens for such a failure (as bench/bench_rca.py --offline)."""
    if case["oom_killed"]:
        return {"id": 1, "target": "container:c", "symptom": "oom", "detail": {}, "count": 1}
    detail = {"exit_code": case["exit_code"] or 1}
    return {"id": 1, "target": "container:c", "symptom": "died", "detail": detail, "count": 1}


def test_cases_are_well_formed() -> None:
    ids = [c["id"] for c in ALL]
    assert len(ids) == len(set(ids))
    assert len({c["source"] for c in ALL}) == len(ALL), "one case per thread"
    for case in ALL:
        assert set(case) == FIELDS, case["id"]
        head, cat = case["id"].split("-")[:2]
        assert head == "ho" and PREFIX[cat] == case["category"], case["id"]
        assert case["category"] in get_args(RcaCategory)
        assert case["log"].strip() and case["why"].strip() and "#" in case["source"]
        assert case["exit_code"] is None or isinstance(case["exit_code"], int)
        assert isinstance(case["oom_killed"], bool)


def batch(case: dict[str, Any]) -> int:
    """Collection batch: NN 01-10 the first, NN 11-20 the second."""
    return (int(case["id"].split("-")[2]) - 1) // 10 + 1


def test_split_is_the_documented_one() -> None:
    """Per batch: order by (category, sha256(id)), deal alternately, tune first, then test."""
    dealt: dict[str, set[str]] = {half: set() for half in HALVES}
    for number in sorted({batch(c) for c in ALL}):
        mine = [c for c in ALL if batch(c) == number]
        ordered = sorted(
            mine, key=lambda c: (c["category"], hashlib.sha256(c["id"].encode()).digest())
        )
        for half, start in zip(HALVES, (0, 1), strict=True):
            dealt[half] |= {c["id"] for c in ordered[start::2]}
    for half in HALVES:
        assert dealt[half] == {c["id"] for c in HELDOUT[half]}
    tune_cats = {c["category"] for c in HELDOUT["tune"]}
    assert tune_cats == {c["category"] for c in HELDOUT["test"]} == set(PREFIX.values())


def test_disjoint_from_the_dev_cases() -> None:
    dev = load("rca-sample.jsonl")
    full = DATA.parents[1] / ".." / "shared" / "diagnosis" / "rca-dev.jsonl"
    if full.exists():  # the whole dev set, where the checkout sits beside it
        dev += [json.loads(line) for line in full.read_text().splitlines() if line.strip()]
    assert not {c["source"] for c in dev} & {c["source"] for c in ALL}
    assert not {c["log"] for c in dev} & {c["log"] for c in ALL}


@pytest.mark.parametrize("case", ALL, ids=[c["id"] for c in ALL])
def test_rules_rca_is_valid(case: dict[str, Any]) -> None:
    log_lines = [line for line in case["log"].splitlines() if line.strip()]
    rca = triage(incident_of(case), [("container:c", line) for line in log_lines])
    assert rca.category in get_args(RcaCategory)
    assert 0.0 <= rca.confidence <= 1.0
    assert rca.summary.strip() and rca.recommendation.strip()
    assert 1 <= len(rca.evidence) <= MAX_EVIDENCE
    for ev in rca.evidence:
        if ev.source == "incident:1":  # a container fact (exit code, OOM verdict), not a line
            continue
        assert ev.source == "container:c"
        quoted = ev.line.removesuffix(" [...]")
        assert any(line.startswith(quoted) for line in log_lines), ev.line
        assert len(quoted) <= MAX_LINE_CHARS
