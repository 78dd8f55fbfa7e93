"""A rolling restart's verification: converged and clean for the stable window.

A task that failed early in the update (before the dependency it waited for came back) must
not fail a service that has run clean since; a failure inside the window restarts the wait.
"""

from __future__ import annotations

from typing import Any

import anyio

from mcp_server.backends.swarm.engine import SwarmBackend


class Scripted(SwarmBackend):
    """converged() answers from a script (ok, failures), one entry per poll; the last repeats."""

    def __init__(self, script: list[tuple[bool, int]]) -> None:
        self.script = script
        self.polls = 0

    async def converged(self, name: str, before: Any = None) -> tuple[bool, str, int]:
        ok, failures = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        return ok, f"poll {self.polls}", failures


def test_an_early_failure_does_not_fail_a_service_running_clean_since() -> None:
    swarm = Scripted([(False, 0), (False, 1), (True, 1)])
    ok, detail = anyio.run(swarm.wait_converged, "web", 10.0, 1.0)
    assert ok and "no new task failure" in detail, detail


def test_a_failure_inside_the_window_restarts_the_wait() -> None:
    swarm = Scripted([(True, 0), (True, 1), (True, 1)])
    ok, _ = anyio.run(swarm.wait_converged, "web", 10.0, 1.0)
    assert ok and swarm.polls >= 4  # 1 poll, reset at the failure, then a full window again


def test_failing_on_every_poll_never_verifies() -> None:
    swarm = Scripted([(True, n) for n in range(100)])
    ok, detail = anyio.run(swarm.wait_converged, "web", 3.0, 1.0)
    assert not ok and detail.startswith("not converged after 3s"), detail
