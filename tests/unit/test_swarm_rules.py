"""Swarm pure logic with plain API documents: rows, the failure-rate, node and quorum rules,
what an update changed, log tags, listing lines and the service RCA."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent_runner.rules import triage
from mcp_server.backends.swarm.engine import build_snapshot, spec_change, tag_line
from mcp_server.backends.swarm.format import NodeRow, describe, node_line, service_line
from mcp_server.backends.swarm.rules import (
    QUORUM_TARGET,
    node_findings,
    quorum_finding,
    service_finding,
    service_fine,
)
from tests.swarm_docs import LIMITS, NOW, node, service, snap, task, ts


def test_one_failed_task_is_the_swarms_to_restart_a_rate_of_them_is_an_incident() -> None:
    s = snap([service()], [task(1, "failed", 20), task(2, "failed", 10), task(1, "running", 5)])
    row = s.services[0]
    assert service_finding(row, s.tasks, None, NOW, LIMITS) is None
    s = snap([service()], [task(1, "failed", 30), task(2, "failed", 20), task(1, "failed", 10)])
    found = service_finding(s.services[0], s.tasks, None, NOW, LIMITS)
    assert found is not None and found.target == "service:web"
    assert found.symptom == "task_failures" and "3 tasks failed" in found.title
    assert found.detail["exit_codes"] == [2] and len(found.detail["errors"]) == 3
    assert "task: non-zero exit (2)" in found.detail["errors"][-1]


def test_failures_before_the_window_or_the_last_update_do_not_count() -> None:
    old = [task(1, "failed", 900), task(2, "failed", 800), task(1, "failed", 700)]
    s = snap([service()], old)
    assert service_finding(s.services[0], s.tasks, None, NOW, LIMITS) is None
    recent = [task(1, "failed", 50), task(2, "failed", 40), task(1, "failed", 30)]
    update = {"State": "completed", "StartedAt": ts(20)}  # a rollback / force after them
    s = snap([service(update=update)], recent)
    assert service_finding(s.services[0], s.tasks, None, NOW, LIMITS) is None
    assert service_fine(s.services[0], s.tasks, NOW, LIMITS)


def test_paused_update_comes_first_and_shortfall_needs_its_duration() -> None:
    paused = {"State": "paused", "StartedAt": ts(60), "Message": "update paused due to failure"}
    s = snap([service(running=1, update=paused)], [task(2, "failed", 30)])
    found = service_finding(s.services[0], s.tasks, None, NOW, LIMITS)
    assert found is not None and found.symptom == "update_failed"
    s = snap([service(running=1)], [])
    below = NOW - timedelta(seconds=10)
    assert service_finding(s.services[0], s.tasks, below, NOW, LIMITS) is None
    below = NOW - timedelta(seconds=31)
    found = service_finding(s.services[0], s.tasks, below, NOW, LIMITS)
    assert found is not None and found.symptom == "replicas_low" and "1/2" in found.title
    assert not service_fine(s.services[0], s.tasks, NOW, LIMITS)


def test_quorum_is_at_risk_when_reachable_managers_are_at_most_half() -> None:
    rows = build_snapshot([node(1), node(2), node(3, "down", "unreachable")], [], []).nodes
    assert quorum_finding(rows) is None  # 2 of 3
    rows = build_snapshot(
        [node(1), node(2, "down", "unreachable"), node(3, "down", "unreachable")], [], []
    ).nodes
    found = quorum_finding(rows)
    assert found is not None and found.critical and found.target == QUORUM_TARGET
    assert "1 of 3" in found.title and found.detail["down"] == ["n2", "n3"]
    two = build_snapshot([node(1), node(2, "down", "unreachable")], [], []).nodes
    assert quorum_finding(two) is not None  # 1 of 2 is no majority
    workers = [node(1), node(4, "down", None, role="worker"), node(5, "down", None, "worker")]
    assert quorum_finding(build_snapshot(workers, [], []).nodes) is None
    assert quorum_finding([]) is None


def test_node_down_says_where_its_tasks_went() -> None:
    tasks = [
        task(1, "running", 100, node_i=3),
        task(1, "running", 5, node_i=2),
        task(2, "running", 100, node_i=3),
    ]
    s = snap([service()], tasks, [node(1), node(2), node(3, "down", "unreachable")])
    found = node_findings(s.nodes, s.tasks)
    assert [f.target for f in found] == ["node:n3"]
    assert found[0].symptom == "node_down" and "manager unreachable" in found[0].title
    assert "web.1 n3 -> n2" in found[0].detail["moved"]
    assert "web.2 lost (not running elsewhere yet)" in found[0].detail["moved"]
    assert node_findings(snap([], [], [node(1), node(2)]).nodes, []) == []


def test_rows_and_lines_are_bounded_and_readable() -> None:
    s = snap([service(running=1)], [task(1, "failed", 10, node_i=2), task(2, "running", 5)])
    row = s.services[0]
    assert (row.desired, row.running, row.image, row.nodes) == (2, 1, "img:1", ["n1"])
    assert (
        describe(row) == "1/2 running, 1 task failures (last: web.1 on n2: task: non-zero exit (2))"
    )
    assert service_line(row).startswith(
        "web | replicated | 1/2 running"
    ) and "nodes: n1" in service_line(row)
    leader = NodeRow(
        name="n1",
        id="x",
        role="manager",
        status="ready",
        availability="active",
        reachability="reachable",
        leader=True,
        engine="20.10",
        addr="198.18.0.11",
    )
    assert (
        node_line(leader)
        == "n1 | manager (leader) | ready | active | reachable | engine 20.10 | 198.18.0.11"
    )


def test_spec_change_names_what_the_update_changed_not_filled_defaults() -> None:
    prev = {
        "TaskTemplate": {
            "ContainerSpec": {"Command": ["sleep", "1d"], "Image": "a"},
            "ForceUpdate": 0,
        },
        "Labels": {},
    }
    cur = {
        "TaskTemplate": {
            "ContainerSpec": {"Command": ["exit", "3"], "Image": "a", "DNSConfig": {}},
            "ForceUpdate": 1,
        },
        "UpdateConfig": {"Parallelism": 1},
        "Labels": {},
    }
    changed = spec_change({"Spec": cur, "PreviousSpec": prev})
    assert changed == ["TaskTemplate.ContainerSpec.Command: ['sleep', '1d'] -> ['exit', '3']"]
    assert spec_change({"Spec": cur}) == []


def test_log_lines_are_tagged_with_their_task_and_node() -> None:
    line = (
        "2026-01-01T12:00:00.123456789Z com.docker.swarm.node.id=node2xxxxxxxxxxxxxx,"
        "com.docker.swarm.service.id=svc,com.docker.swarm.task.id=task1abcdefgh0000 boom"
    )
    out = tag_line(line, "web", {"node2xxxxxxx": "n2"}, {"task1abcdefg": "web.1"})
    assert out == "2026-01-01T12:00:00.123Z [web.1@n2] boom"
    assert tag_line("plain", "web", {}, {}) == "plain"


def _incident(update: bool) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "failures": 4,
        "exit_codes": [2],
        "replicas_logging": ["web.1", "web.2"],
        "errors": ["web.1 on n2: task: non-zero exit (2) (exit 2)"],
        "log_summary": ["[error x8 L1-L16] connect to db:5432 failed: connection refused"],
    }
    if update:
        detail["update"] = {
            "at": "2026-01-01T11:59:00Z",
            "changed": ["TaskTemplate.ContainerSpec.Command: a -> b"],
        }
        detail["remedy"] = "rollback"
    return {
        "id": 7,
        "target": "service:web",
        "symptom": "task_failures",
        "count": 1,
        "title": "service:web: 4 tasks failed",
        "detail": detail,
    }


def test_service_rca_quotes_task_errors_and_the_summarised_logs() -> None:
    rca = triage(_incident(update=False), [])
    assert rca.category == "dependency" and rca.restart_safe
    assert "4 task failures across 2 replicas" in rca.summary
    lines = [e.line for e in rca.evidence]
    assert "web.1 on n2: task: non-zero exit (2) (exit 2)" in lines
    assert any("connection refused" in line for line in lines)
    assert "service:web (all replicas, summarised)" in {e.source for e in rca.evidence}


def test_service_rca_names_the_update_first_and_recommends_a_rollback() -> None:
    rca = triage(_incident(update=True), [])
    assert "the update is the first suspect" in rca.summary
    assert rca.recommendation.startswith("Roll back: rollback(target='service:web')")
    assert not rca.restart_safe and rca.confidence >= 0.7
    assert rca.evidence[0].line.startswith("update 2026-01-01T11:59:00Z: TaskTemplate")


def test_node_rca_says_where_its_tasks_went_and_never_recommends_acting_on_it() -> None:
    inc = {
        "id": 3,
        "target": "node:n3",
        "symptom": "node_down",
        "title": "node n3: status down",
        "detail": {
            "status": "down",
            "reachability": "unreachable",
            "moved": ["web.1 n3 -> n2", "web.2 lost (not running elsewhere yet)"],
        },
    }
    rca = triage(inc, [])
    assert "1 of its tasks were rescheduled on other nodes, 1 not (yet)" in rca.summary
    assert rca.evidence[0].line == "web.1 n3 -> n2"
    assert not rca.restart_safe and "does not act on nodes" in rca.recommendation
