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


class Answer:
    def __init__(self, data: dict[str, Any] | None = None, error: str = "") -> None:
        self.is_error = bool(error)
        self.content = [type("Text", (), {"text": error})()] if error else []
        self.structured_content = data


class Server:
    """get_incident answers an open incident; update_incident refuses with `refusal` (and
    the structured fields a refusal carries, if any)."""

    def __init__(self, refusal: str, data: dict[str, Any] | None = None) -> None:
        self.refusal, self.data = refusal, data

    async def call_tool(self, tool: str, args: dict[str, Any], **_: Any) -> Answer:
        if tool == "get_incident":
            return Answer({"id": 7, "status": "open", "count": 2, "target": "container:x"})
        assert tool == "update_incident", tool
        answer = Answer(error=self.refusal)
        answer.structured_content = self.data
        return answer


def test_a_claim_held_elsewhere_is_looked_at_again_but_a_finished_triage_is_not() -> None:
    held = Runner(Server("another OpsMedic is diagnosing incident 7; its RCA lands there",
                         {"refused": True, "rule": "triage_claim", "wait_s": 10.0}),
                  advisor=None, clock=lambda: 100.0)  # type: ignore[arg-type]  # fmt: skip
    anyio.run(held.handle, 7)
    assert held._retry == {7: 110.0}  # its holder may die with the claim in hand
    done = Runner(Server("incident 7 was diagnosed by OpsMedic beta and not seen again since"),
                  advisor=None, clock=lambda: 100.0)  # type: ignore[arg-type]  # fmt: skip
    anyio.run(done.handle, 7)
    assert done._retry == {}
