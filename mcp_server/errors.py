"""Errors whose messages are written for an LLM (or a person) to act on.

Every backend translates its library's exceptions into one of these, once, at its edge.
The tools layer turns them into MCP tool errors with the same text.
"""

from __future__ import annotations


class OpsMedicError(Exception):
    """Base class. The message says what went wrong and what to do next."""

    kind = "error"


class NotFound(OpsMedicError):
    """The named thing does not exist; the message names the call that lists what does."""

    kind = "not_found"


class Refused(OpsMedicError):
    """Policy or safety refused the action; the message says why and what would allow it.

    `data` carries the same decision as fields (rule, wait_s, retry_at, remedy, escalate)
    so a client schedules its retry from data, never from the prose."""

    kind = "refused"

    def __init__(self, message: str, data: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.data: dict[str, object] = dict(data or {})


class Unavailable(OpsMedicError):
    """A dependency (Docker engine, store, mail server) cannot be reached right now."""

    kind = "unavailable"


class InvalidInput(OpsMedicError):
    """An argument is malformed; the message shows the expected form."""

    kind = "invalid_input"


class Conflict(OpsMedicError):
    """The state changed underneath the request (lease held, plan stale, token used)."""

    kind = "conflict"


class ConfigError(OpsMedicError):
    """Configuration is invalid; the message names the key and how to fix it."""

    kind = "config"
