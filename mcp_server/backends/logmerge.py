"""Merge error templates that differ in one word into one template with its values.

`Invalid user admin from <IP>` and `Invalid user test from <IP>` are one failure with a
variable user: shown as `Invalid user {admin|test} from <IP>`, with the summed count. Every
constant word stays; the values of the one varying slot are listed (and may be shortened
to fit a budget: they are the variable part). Templates that differ in two places stay apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

SLOT = "<ALT>"
MAX_TOKENS = 60  # longer templates are rarely near-duplicates; comparing them costs O(n^2)
MIN_TOKENS = 3  # "ERROR boom" and "ERROR crash" share too little to be one template


@dataclass
class Group:
    """One merged template: the tokens, the varying slot and the values seen in it."""

    severity: str
    tokens: list[str]
    members: list[int] = field(default_factory=list)  # indexes of the merged inputs
    first_count: int = 1
    slot: int | None = None
    values: dict[str, int] = field(default_factory=dict)  # value -> line count

    def template(self) -> str:
        if self.slot is None:
            return " ".join(self.tokens)
        return " ".join(SLOT if i == self.slot else t for i, t in enumerate(self.tokens))


def group_variants(rows: Iterable[tuple[str, str, int]]) -> list[Group]:
    """Group `(severity, template, count)` rows (in first-seen order) by one-slot variants."""
    groups: list[Group] = []
    index: dict[tuple[str, int, int, int], Group] = {}
    for n, (severity, template, count) in enumerate(rows):
        tokens = template.split(" ")
        size = len(tokens)
        sigs = _signatures(severity, tokens) if MIN_TOKENS <= size <= MAX_TOKENS else []
        target = next(
            ((g, i) for i, sig in sigs if (g := index.get(sig)) and g.slot in (None, i)), None
        )
        if target is None:
            group = Group(severity, tokens, [n], first_count=count)
            groups.append(group)
            index.update((sig, group) for _i, sig in sigs)
            continue
        group, slot = target
        if group.slot is None:
            group.slot = slot
            group.values[group.tokens[slot]] = group.first_count
        group.members.append(n)
        group.values[tokens[slot]] = group.values.get(tokens[slot], 0) + count
    return groups


def _signatures(severity: str, tokens: list[str]) -> list[tuple[int, tuple[str, int, int, int]]]:
    """One key per position: the template with that position blanked out."""
    out = []
    for i in range(len(tokens)):
        key = (severity, len(tokens), i, hash((*tokens[:i], *tokens[i + 1 :])))
        out.append((i, key))
    return out


def render_values(values: list[str], limit: int | None) -> str:
    """`{a|b|c}`, or `{a|b|…+5 more}` when only `limit` values may be shown."""
    if limit is None or len(values) <= limit:
        return "{" + "|".join(values) + "}"
    return "{" + "|".join(values[:limit]) + f"|…+{len(values) - limit} more}}"
