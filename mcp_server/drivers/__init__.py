"""Target drivers: one per kind, found through a registry (never by branching on the kind).

Third-party packages add kinds through the entry-point group ``opsmedic.drivers``: each entry
names a factory ``(services) -> TargetDriver | None`` called once when the server is built
(None: the kind is not available in this configuration).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

from mcp_server.core.targets import Target
from mcp_server.drivers.base import TargetDriver, TargetState
from mcp_server.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "opsmedic.drivers"
#: Kinds that exist but need no driver: observed only (incidents, logs), never acted on.
OBSERVED_ONLY = frozenset({"host", "probe", "file", "alert", "swarm"})

__all__ = ["ENTRY_POINT_GROUP", "Drivers", "TargetDriver", "TargetState"]


class Drivers:
    """kind -> driver. `get` explains which kinds exist when asked for another."""

    def __init__(self, drivers: list[TargetDriver] | None = None) -> None:
        self._by_kind: dict[str, TargetDriver] = {}
        for driver in drivers or []:
            self.add(driver)

    def add(self, driver: TargetDriver) -> None:
        if driver.kind in self._by_kind:
            raise ValueError(f"two drivers for kind {driver.kind!r}")
        self._by_kind[driver.kind] = driver

    def get(self, kind: str) -> TargetDriver:
        driver = self._by_kind.get(kind)
        if driver is None:
            known = ", ".join(sorted(self._by_kind)) or "none configured"
            if kind in OBSERVED_ONLY:
                raise InvalidInput(f"{kind} targets are observed only; acting kinds: {known}")
            raise NotFound(f"no driver for {kind!r} targets in this server (kinds: {known})")
        return driver

    def of(self, target: Target) -> TargetDriver:
        return self.get(target.kind)

    @property
    def restartable(self) -> frozenset[str]:
        return frozenset(k for k, d in self._by_kind.items() if d.restartable)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._by_kind)

    def __iter__(self) -> Iterator[TargetDriver]:
        return iter(list(self._by_kind.values()))

    def load_plugins(self, services: Any) -> None:
        """Add the drivers other packages register under ENTRY_POINT_GROUP."""
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                driver = ep.load()(services)
            except Exception:
                logger.exception("driver plugin %s failed to load; skipped", ep.name)
                continue
            if driver is not None:
                self.add(driver)
