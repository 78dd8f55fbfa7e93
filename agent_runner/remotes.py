"""The servers one runner drives: `opsmedic run --url URL [--token T] [--url URL2 --token T2]`.

Tokens pair with URLs by position: one `--token` per `--url`, or a single `--token` for every
URL, or none (servers without auth, on loopback). A token written `env:NAME` is read from the
environment variable NAME, so it does not show in the process list.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mcp_server.errors import ConfigError

ENV_PREFIX = "env:"


@dataclass(frozen=True)
class Remote:
    url: str
    token: str | None = field(default=None, repr=False)  # never in logs or reprs

    @property
    def name(self) -> str:
        """host:port, how logs and reports name this server (no path, no credentials)."""
        parts = urlsplit(self.url)
        return parts.netloc.rpartition("@")[2] or self.url


def remotes(urls: Sequence[str], tokens: Sequence[str]) -> list[Remote]:
    """Pair URLs and tokens (see the module doc); ConfigError says how to fix a bad pairing."""
    if tokens and not urls:
        raise ConfigError("--token is for --url: give the server's URL with --url URL")
    if len(tokens) not in (0, 1, len(urls)):
        raise ConfigError(
            f"{len(urls)} --url but {len(tokens)} --token: give one --token per --url "
            "(in the same order), or a single --token for every URL"
        )
    seen: set[str] = set()
    out = []
    for i, url in enumerate(urls):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--url {url!r}: expected http(s)://host:port/mcp")
        if url in seen:
            raise ConfigError(f"--url {url!r} is given twice: one runner loop per server")
        seen.add(url)
        raw = tokens[i] if len(tokens) == len(urls) else (tokens[0] if tokens else None)
        out.append(Remote(url, _token(raw)))
    return out


def _token(raw: str | None) -> str | None:
    if raw is None or not raw.startswith(ENV_PREFIX):
        return raw or None
    name = raw.removeprefix(ENV_PREFIX)
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"--token {raw}: the environment variable {name} is not set or empty")
    return value
