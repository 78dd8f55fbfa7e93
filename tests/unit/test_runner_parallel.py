"""The runner handles incidents in parallel, and never drops an event for one in hand."""

from __future__ import annotations

from typing import Any

import anyio

from agent_runner.runner import Runner


class Recording(Runner):
    def __init__(self) -> None:
        super().__init__(client=None, advisor=None, parallel=2)  # type: ignore[arg-type]
        self.calls: list[int] = []
        self.release = anyio.Event()

    async def handle(self, incident_id: int) -> None:
        self.calls.append(incident_id)
        await self.release.wait()


def test_an_event_for_an_incident_in_hand_is_handled_again_after_it() -> None:
    async def main() -> Any:
        runner = Recording()
        async with anyio.create_task_group() as tg:
            runner._start(tg, 1)
            runner._start(tg, 2)
            await anyio.wait_all_tasks_blocked()
            assert sorted(runner.calls) == [1, 2]  # both at once
            runner._start(tg, 1)  # a new event while 1 is in hand
            runner._start(tg, 1)  # and another: one more pass covers both
            await anyio.wait_all_tasks_blocked()
            assert runner.calls.count(1) == 1
            runner.release.set()
        return runner.calls

    calls = anyio.run(main)
    assert calls.count(1) == 2 and calls.count(2) == 1, calls
