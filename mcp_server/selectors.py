"""Label selectors, like Kubernetes equality selectors: `env=prod,tier!=db,gpu`.

Terms are comma-separated and all must hold:

- `key=value` (or `key==value`): the label is present with exactly that value;
- `key!=value`: the label is absent, or present with another value;
- `key`: the label is present (any value);
- `!key`: the label is absent.

An empty selector has no terms and matches every label set. Used for the policy scope
(OPSMEDIC_POLICY__SELECTOR) and for `list_containers(selector=...)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mcp_server.errors import InvalidInput

Op = Literal["=", "!=", "exists", "absent"]

_KEY = r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9])?"
_VALUE = r"[A-Za-z0-9._:/@+-]*"
_TERM_RE = re.compile(
    rf"^(?:(?P<absent>!)\s*(?P<akey>{_KEY})"
    rf"|(?P<key>{_KEY})(?:\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE}))?)$"
)
EXPECTED_FORM = (
    "comma-separated terms key=value, key!=value, key (present) or !key (absent), "
    "e.g. 'env=prod,opsmedic.managed=true,tier!=db,gpu'"
)


@dataclass(frozen=True)
class Requirement:
    """One term of a selector."""

    key: str
    op: Op
    value: str | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "absent":
            return self.key not in labels
        if self.op == "=":
            return self.key in labels and str(labels[self.key]) == self.value
        return self.key not in labels or str(labels[self.key]) != self.value

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "absent":
            return f"!{self.key}"
        return f"{self.key}{self.op}{self.value}"


@dataclass(frozen=True)
class Selector:
    """A parsed selector; `matches(labels)` is true when every term holds."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """True when every term holds for `labels` (None counts as no labels)."""
        present = labels or {}
        return all(req.matches(present) for req in self.requirements)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def equality_labels(self) -> dict[str, str] | None:
        """The labels to set to satisfy this selector, when it is made of `key=value` terms
        only (else None): used to tell a person exactly which label to add."""
        if not self.requirements or any(r.op != "=" for r in self.requirements):
            return None
        return {r.key: r.value or "" for r in self.requirements}

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def parse_selector(text: str | None) -> Selector:
    """Parse `text` into a Selector; raise InvalidInput showing the expected form.

    None or blank text gives the empty selector (matches everything).
    """
    if text is None or not text.strip():
        return Selector()
    requirements: list[Requirement] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            raise InvalidInput(f"selector {text!r} has an empty term; use {EXPECTED_FORM}")
        match = _TERM_RE.match(term)
        if match is None:
            raise InvalidInput(f"selector term {term!r} is not valid; use {EXPECTED_FORM}")
        if match["absent"]:
            requirements.append(Requirement(match["akey"], "absent"))
        elif match["op"] is None:
            requirements.append(Requirement(match["key"], "exists"))
        else:
            op: Op = "!=" if match["op"] == "!=" else "="
            requirements.append(Requirement(match["key"], op, match["value"]))
    return Selector(tuple(requirements))
