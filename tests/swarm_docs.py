"""Swarm API documents as a manager returns them, for tests of the pure swarm logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mcp_server.backends.swarm.engine import SwarmSnapshot, build_snapshot
from mcp_server.backends.swarm.rules import SwarmLimits

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIMITS = SwarmLimits(failures=3, window_s=300.0, shortfall_s=30.0)


def ts(seconds_ago: float, now: datetime = NOW) -> str:
    return (now - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def node(i: int, state: str = "ready", reach: str | None = "reachable", role: str = "manager"):
    doc: dict[str, Any] = {
        "ID": f"node{i}xxxxxxxxxxxxxx",
        "Description": {"Hostname": f"n{i}", "Engine": {"EngineVersion": "20.10.24"}},
        "Spec": {"Role": role, "Availability": "active"},
        "Status": {"State": state, "Addr": f"198.18.0.1{i}"},
    }
    if role == "manager":
        doc["ManagerStatus"] = {"Reachability": reach, "Leader": i == 1}
    return doc


def service(
    name: str = "web",
    desired: int = 2,
    running: int = 2,
    update: dict | None = None,
    now: datetime = NOW,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ID": f"svc-{name}",
        "CreatedAt": ts(3600, now),
        "Spec": {
            "Name": name,
            "Mode": {"Replicated": {"Replicas": desired}},
            "TaskTemplate": {"ContainerSpec": {"Image": "img:1@sha256:abc"}},
            "Labels": {"opsmedic.managed": "true"},
        },
        "ServiceStatus": {"DesiredTasks": desired, "RunningTasks": running},
    }
    if update:
        doc["UpdateStatus"] = update
    return doc


def task(
    slot: int,
    state: str,
    ago: float,
    node_i: int = 1,
    svc: str = "web",
    code: int = 2,
    now: datetime = NOW,
) -> dict[str, Any]:
    return {
        "ID": f"task{slot}{state}{int(ago)}xxxxxxxx",
        "ServiceID": f"svc-{svc}",
        "Slot": slot,
        "NodeID": f"node{node_i}xxxxxxxxxxxxxx",
        "DesiredState": "running",
        "Status": {
            "State": state,
            "Timestamp": ts(ago, now),
            "Err": f"task: non-zero exit ({code})" if state == "failed" else "",
            "ContainerStatus": {"ExitCode": code if state == "failed" else 0},
        },
    }


def snap(services: list[dict], tasks: list[dict], nodes: list[dict] | None = None) -> SwarmSnapshot:
    return build_snapshot(nodes or [node(1), node(2), node(3)], services, tasks)
