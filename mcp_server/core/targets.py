"""A target is a value, parsed once where text enters (tool arguments, CLI, config).

Written ``kind:name`` (``container:web``, ``process:worker``, ``job:invoice-bot``,
``file:/var/log/app.log``, ``probe:api``) or plain ``host``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.errors import InvalidInput

#: Kinds whose name may be empty (a single thing per OpsMedic).
SINGLETONS = frozenset({"host"})
MAX_NAME = 512


@dataclass(frozen=True, order=True)
class Target:
    kind: str
    name: str = ""

    @classmethod
    def parse(cls, text: str, kinds: frozenset[str] | None = None) -> Target:
        """``"container:web"`` -> Target("container", "web"); InvalidInput for other forms.
        `kinds`: the kinds this caller accepts (default: any well-formed kind)."""
        if not isinstance(text, str):
            raise InvalidInput("a target is text of the form kind:name, e.g. container:web")
        kind, sep, name = text.partition(":")
        if not sep and kind in SINGLETONS:
            target = cls(kind)
        elif not sep or not kind or not name or kind != kind.strip() or name != name.strip():
            raise InvalidInput(
                f"target {text[:80]!r} is not of the form kind:name, e.g. container:web, "
                "process:worker or job:invoice-bot"
            )
        elif len(name) > MAX_NAME or not kind.isidentifier():
            raise InvalidInput(f"target {text[:80]!r}: kind or name is not valid")
        else:
            target = cls(kind, name)
        if kinds is not None and target.kind not in kinds:
            raise InvalidInput(
                f"{target} cannot be used here; the kinds that can are: {', '.join(sorted(kinds))}"
            )
        return target

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind
