"""Webhook notification channels: `[[notify.webhooks]]` in opsmedic.toml (see README).

Kept beside settings.py (which imports it) so the channel rules stay in one small place.
Like settings.py, this module imports nothing of ours.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

WebhookEvent = Literal["opened", "escalated", "resolved", "approval"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
DEFAULT_EVENTS: list[WebhookEvent] = ["opened", "escalated", "resolved"]

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RESERVED = {"content-type", "content-length", "host", "user-agent", "transfer-encoding"}


def _expand_env(text: str, where: str) -> str:
    """`${NAME}` -> the value of environment variable NAME (the secret stays out of the file)."""

    def one(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            raise ValueError(
                f"environment variable {match.group(1)} (named in {where}) is not set; "
                "export it before starting OpsMedic"
            )
        return value

    return _ENV_REF.sub(one, text)


class WebhookSpec(BaseModel):
    """One channel: where to POST, in which format, for which incident events."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    # slack: incoming-webhook JSON (also Mattermost, Rocket.Chat); teams: Adaptive Card
    # message for a Teams Workflows webhook; json: OpsMedic's own schema (README)
    format: Literal["slack", "teams", "json"] = "json"
    events: list[WebhookEvent] = Field(default_factory=lambda: list(DEFAULT_EVENTS), min_length=1)
    min_severity: Literal["info", "warning", "critical"] = "warning"
    # "Header-Name: value"; ${ENV_VAR} here (and in url) is read from the environment at start
    secret_header: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=12, ge=1, le=100)
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value) and not _ENV_REF.match(value):
            raise ValueError("must be an http:// or https:// URL")
        value = _expand_env(value, "url")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL (check the variable it names)")
        return value

    @field_validator("events", mode="before")
    @classmethod
    def _csv_events(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secret_header")
    @classmethod
    def _header(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        name, sep, raw = value.get_secret_value().partition(":")
        if not sep or not _HEADER_NAME.match(name.strip()) or not raw.strip():
            raise ValueError('must look like "X-Header-Name: value" (value may be ${ENV_VAR})')
        if name.strip().lower() in _RESERVED:
            raise ValueError(f"{name.strip()} is set by OpsMedic; use a header of your own")
        text = _expand_env(raw.strip(), "secret_header")
        if any(c in text for c in "\r\n\x00"):
            raise ValueError("the header value must be one line")
        return SecretStr(f"{name.strip()}: {text}")

    def header(self) -> tuple[str, str] | None:
        """The secret header as (name, value), or None."""
        if self.secret_header is None:
            return None
        name, _, value = self.secret_header.get_secret_value().partition(": ")
        return name, value

    def wants(self, event: str, severity: str) -> bool:
        """True when this channel subscribed to `event` at this incident severity."""
        rank = SEVERITY_RANK.get(severity, 0)
        return event in self.events and rank >= SEVERITY_RANK[self.min_severity]

    def secrets(self) -> list[str]:
        """What redaction must hide: the header value and the URL's path and query (a
        Slack or Teams webhook URL is itself the credential; the host alone is not)."""
        parts = urlsplit(self.url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        found = [tail] if len(tail.strip("/")) >= 8 else []
        if parts.password:
            found.append(parts.password)
        header = self.header()
        if header is not None:
            found.append(header[1])
        return found


def webhook_list(value: Any) -> Any:
    """OPSMEDIC_NOTIFY__WEBHOOKS may hold the list as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else []
        except ValueError:
            raise ValueError('expected a JSON list such as [{"name": "ops", "url": ...}]') from None
    return value


def unique_names(specs: list[WebhookSpec]) -> list[WebhookSpec]:
    """A delivery is keyed by channel name, so two channels may not share one."""
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two webhooks are named {spec.name!r}; give each its own name")
        seen.add(spec.name)
    return specs
