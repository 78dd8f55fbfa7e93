"""The hard cap of a log summary: how to shed error/warning text when even the most compact
rendering of every failure is too long for a model's context.

Two steps, both pure: cut the longest templates to one common length (the largest that fits,
never below a floor), then, if still too long, leave some out: warnings before errors, the
costliest first, so that one huge line does not crowd out many short final failures.
"""

from __future__ import annotations

from collections.abc import Callable


def largest_fitting(low: int, high: int, total: Callable[[int], int], room: int) -> int:
    """The largest limit in [low, high] whose `total(limit)` fits `room` (else `low`);
    `total` must not decrease as the limit grows."""
    while low < high:
        mid = (low + high + 1) // 2
        if total(mid) <= room:
            low = mid
        else:
            high = mid - 1
    return low


def leave_out(ranks: list[int], costs: list[int], excess: int) -> set[int]:
    """Indexes to drop to shed `excess` chars: lowest rank first, then costliest, then latest."""
    dropped: set[int] = set()
    for i in sorted(range(len(costs)), key=lambda i: (ranks[i], -costs[i], -i)):
        if excess <= 0:
            break
        dropped.add(i)
        excess -= costs[i]
    return dropped
