"""The action lease never changes what the action raises (a refusal stays a refusal)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_server.core.action_lease import action_lease
from mcp_server.core.targets import Target
from mcp_server.errors import Refused


class Leases:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    async def acquire_lease(self, name: str, holder: str, ttl: float, now: Any) -> bool:
        return self.held.setdefault(name, holder) == holder

    async def release_lease(self, name: str, holder: str) -> None:
        if self.held.get(name) == holder:
            del self.held[name]


def test_a_refusal_inside_the_lease_comes_out_as_itself_and_the_lease_is_freed() -> None:
    store = Leases()

    async def act() -> None:
        async with action_lease(store, "me", Target.parse("service:web")):
            raise Refused("being restarted by its own policy", {"rule": "self_healing"})

    with pytest.raises(Refused) as caught:
        anyio.run(act)
    assert caught.value.data["rule"] == "self_healing"
    assert store.held == {}
