"""Pure rules for bot jobs: run ids, which log lines are errors, and the error-spike window."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any

ERROR_LEVELS = frozenset({"error", "err", "critical", "crit", "fatal", "alert", "emerg", "panic"})
_ERROR_WORDS = re.compile(r"\b(error|exception|traceback|fatal|panic)\b", re.IGNORECASE)


def run_key(job: str, run: str) -> str:
    """The stored Run.id of a hub run: hub run ids are often only unique within a job."""
    return f"{job}:{run}"


def is_error_line(line: str, level: str | None) -> bool:
    """An error by its level when one is given, else by words like error/exception/fatal."""
    if level is not None:
        return level.strip().lower() in ERROR_LEVELS
    return _ERROR_WORDS.search(line) is not None


@dataclass(frozen=True)
class SpikeRule:
    """A spike: >= `errors` error lines within `window_s`, or > `ratio` of the last `last`."""

    errors: int = 5
    window_s: float = 60.0
    last: int = 20
    ratio: float = 0.5
    cooldown_s: float = 60.0  # at most one report per job per cooldown (by event time)


class LogWindow:
    """Recent log lines of one job, for spike detection (timed by the events' ts)."""

    def __init__(self, rule: SpikeRule) -> None:
        self.rule = rule
        self.last: deque[bool] = deque(maxlen=rule.last)
        self.errors: deque[float] = deque()
        self.samples: deque[str] = deque(maxlen=5)
        self.reported_at: float | None = None

    def add(self, ts: float, line: str, error: bool) -> dict[str, Any] | None:
        """Record a line; the spike's detail when this error line makes (another) report due."""
        rule = self.rule
        self.last.append(error)
        if not error:
            return None
        self.errors.append(ts)
        self.samples.append(line[:300])
        while self.errors and self.errors[0] < ts - rule.window_s:
            self.errors.popleft()
        share = sum(self.last) / len(self.last)
        full = len(self.last) == rule.last
        if len(self.errors) < rule.errors and not (full and share > rule.ratio):
            return None
        if self.reported_at is not None and abs(ts - self.reported_at) < rule.cooldown_s:
            return None
        self.reported_at = ts
        return {
            "errors_in_window": len(self.errors),
            "window_s": rule.window_s,
            "error_share_of_last": round(share, 3),
            "last_lines": len(self.last),
            "sample": list(self.samples),
        }
