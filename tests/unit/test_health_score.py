"""The health score formula (mcp_server.core.health_score), fed by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from mcp_server.core.duties import Duties
from mcp_server.core.health_score import (
    HOST_DUTY,
    HOST_FACT,
    PROBE_FAILED,
    health_score,
    inputs_from_duties,
)
from mcp_server.models import utcnow


def _inc(target: str, severity: str = "warning", iid: int = 1) -> dict[str, object]:
    return {"target": target, "severity": severity, "id": iid}


def test_nothing_wrong_is_100() -> None:
    score = health_score([], {"api": False}, {"cpu": "ok", "disk /": "ok"})
    assert score.overall == 100
    assert score.targets == {"probe:api": 100, "host": 100}


@pytest.mark.parametrize(
    ("severity", "expected"), [("critical", 60), ("warning", 80), ("info", 95), ("odd", 80)]
)
def test_one_incident_by_severity(severity: str, expected: int) -> None:
    score = health_score([_inc("container:web", severity)], {}, {})
    assert score.targets == {"container:web": expected}
    assert score.overall == expected
    assert score.reasons["container:web"] == [f"{severity} incident 1"]


def test_penalties_add_up_per_target_and_floor_at_zero() -> None:
    incs = [_inc("container:web", "critical", i) for i in range(3)]
    score = health_score(incs, {}, {})
    assert score.targets["container:web"] == 0 and score.overall == 0


def test_failing_probe_and_its_incident() -> None:
    score = health_score([_inc("probe:api")], {"api": True, "db": False}, {})
    assert score.targets == {"probe:api": 100 - 20 - 30, "probe:db": 100}
    assert score.overall == 50


def test_host_thresholds() -> None:
    score = health_score([], {}, {"cpu": "warn", "disk /": "crit", "memory": "ok"})
    assert score.targets == {"host": 100 - 10 - 25}
    assert score.reasons["host"] == ["cpu warn", "disk / crit"]


def test_overall_is_the_worst_minus_five_per_other_degraded_target() -> None:
    incs = [_inc("container:web", "critical"), _inc("container:db"), _inc("process:w")]
    score = health_score(incs, {"api": False}, {"cpu": "ok"})
    assert score.targets["container:web"] == 60
    assert score.overall == 60 - 5 - 5  # db and w are degraded too; api and host are not
    rows = score.as_json()["targets"]
    assert rows[0] == {"target": "container:web", "score": 60, "reasons": ["critical incident 1"]}


def test_inputs_from_duty_records_as_heartbeats_carry_them() -> None:
    now = utcnow()
    duties = Duties(clock=lambda: now)
    duties.add("probe:api", 10)
    duties.beat("probe:api", PROBE_FAILED)
    duties.add("probe:never", 10)  # not checked yet: neither failing nor passing
    duties.add(HOST_DUTY, 30)
    duties.beat(HOST_DUTY, facts={HOST_FACT: {"cpu": "crit", "memory": "ok"}})
    other = {"name": HOST_DUTY, "facts": {HOST_FACT: {"cpu": "warn", "memory": "warn"}},
             "last_progress_age_s": 1.0}  # fmt: skip
    records = [v.as_json() for v in duties.views(now + timedelta(seconds=1))] + [other]
    probes, host = inputs_from_duties(records)
    assert probes == {"api": True}
    assert host == {"cpu": "crit", "memory": "warn"}  # the worst report per metric
