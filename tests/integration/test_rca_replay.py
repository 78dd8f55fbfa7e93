"""Real failures replayed through real containers: the rules RCA names the cause and cites it.

One case per category from ../shared/diagnosis/rca-dev.jsonl (the first of each), run as
containers that print the case's log and end as it ended (exit code, or a real OOM kill);
the runner in check mode triages them; get_incident shows the category and the evidence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rca_replay import diagnosis_dir, load_cases, replay

# The first case of each category, kept in the repo (short quotations from public threads,
# for testing only: see ../shared/diagnosis/README.md) so the test runs wherever it is cloned.
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "rca-sample.jsonl"


def _one_per_category() -> list[dict]:
    path = diagnosis_dir() / "rca-dev.jsonl"
    if not path.exists():
        path = SAMPLE
    seen: dict[str, dict] = {}
    for case in load_cases(path):
        seen.setdefault(case["category"], case)
    return list(seen.values())


CASES = _one_per_category()


@pytest.mark.skipif(not CASES, reason="../shared/diagnosis/rca-dev.jsonl is not here")
async def test_replayed_failures_get_their_category_and_cited_lines(
    docker_client, busybox_image, tmp_path
):
    got = await replay(docker_client, busybox_image, CASES, tmp_path, timeout_s=120)
    assert set(got) == {c["id"] for c in CASES}
    for case in CASES:
        inc = got[case["id"]]
        rca = inc["rca"]
        assert rca["category"] == case["category"], (case["id"], rca["summary"])
        assert rca["author"] == "rules" and 0 < rca["confidence"] <= 1
        log_lines = [line for line in case["log"].splitlines() if line.strip()]
        for ev in rca["evidence"]:
            # every quote is a real line of the container's log (the engine prefixes its
            # timestamp), or a fact of the incident
            quoted = any(ev["line"].endswith(line.rstrip()) for line in log_lines)
            assert quoted or ev["source"] == f"incident:{inc['id']}", ev
        if case["category"] not in ("oom", "unknown"):
            assert any(ev["source"].startswith("container:") for ev in rca["evidence"])
        if case["category"] != "unknown":
            assert "Runner-up" in rca["summary"] or "Score" in rca["summary"]
