"""The restart ledger: action starts, results, health and in-flight actions per target.

Pure data the policy reads. The server rebuilds it from the store's action records for every
decision (core.actions.ledger_from), so it is never the source of truth itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

HOUR_S = 3600.0


class RestartLedger:
    """In-memory record of action starts, results, health and in-flight actions per target.

    Times are the caller's clock (seconds). Persist it with to_dict()/from_dict(); a restored
    ledger forgets in-flight actions by default, since they died with the process running them.
    """

    def __init__(self, keep_s: float = 86_400.0, max_per_target: int = 200) -> None:
        self.keep_s = keep_s
        self.max_per_target = max_per_target
        self._starts: dict[str, list[float]] = {}
        self._healthy: dict[str, float] = {}
        self._in_flight: dict[str, float] = {}
        self._last: dict[str, dict[str, Any]] = {}

    def record_start(self, target: str, now: float) -> None:
        """An action on `target` starts now: counts against budgets; target is in flight."""
        times = [t for t in self._starts.get(target, []) if now - t < self.keep_s]
        times.append(now)
        self._starts[target] = sorted(times)[-self.max_per_target :]
        self._in_flight[target] = now
        self._healthy.pop(target, None)

    def seed(self, target: str, times: Sequence[float]) -> None:
        """Add earlier starts (e.g. read back from the audit log after a restart of OpsMedic),
        so budgets and backoff survive the process; not in flight."""
        merged = sorted(set(self._starts.get(target, [])) | set(times))
        self._starts[target] = merged[-self.max_per_target :]

    def record_result(self, target: str, ok: bool, now: float) -> None:
        """The action on `target` finished (ok or not); it is no longer in flight."""
        self._in_flight.pop(target, None)
        self._last[target] = {"ok": ok, "at": now}

    def mark_healthy(self, target: str, now: float) -> None:
        """The target looks healthy; the earliest such time is kept until it fails again."""
        self._healthy.setdefault(target, now)

    def mark_unhealthy(self, target: str) -> None:
        """The target failed again: its healthy streak is over."""
        self._healthy.pop(target, None)

    def history(self, target: str) -> list[float]:
        return list(self._starts.get(target, []))

    def healthy_since(self, target: str) -> float | None:
        return self._healthy.get(target)

    @property
    def in_flight(self) -> frozenset[str]:
        return frozenset(self._in_flight)

    def starts_since(self, cutoff: float) -> list[float]:
        """Start times after `cutoff` across all targets, oldest first (the global cap)."""
        return sorted(t for times in self._starts.values() for t in times if t > cutoff)

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """A JSON-ready view for the `opsmedic://policy` resource."""
        names = sorted(set(self._starts) | set(self._healthy) | set(self._in_flight))
        targets = {
            name: {
                "restarts": self.history(name),
                "healthy_since": self._healthy.get(name),
                "in_flight": name in self._in_flight,
                "last_result": self._last.get(name),
            }
            for name in names
        }
        out: dict[str, Any] = {"targets": targets, "in_flight": sorted(self._in_flight)}
        if now is not None:
            out["starts_last_hour"] = len(self.starts_since(now - HOUR_S))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "starts": {k: list(v) for k, v in self._starts.items()},
            "healthy_since": dict(self._healthy),
            "in_flight": dict(self._in_flight),
            "last": {k: dict(v) for k, v in self._last.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], keep_in_flight: bool = False) -> RestartLedger:
        ledger = cls()
        ledger._starts = {k: sorted(float(t) for t in v) for k, v in data["starts"].items()}
        ledger._healthy = {k: float(v) for k, v in data.get("healthy_since", {}).items()}
        ledger._last = {k: dict(v) for k, v in data.get("last", {}).items()}
        if keep_in_flight:
            ledger._in_flight = {k: float(v) for k, v in data.get("in_flight", {}).items()}
        return ledger
