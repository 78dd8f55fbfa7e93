"""HTTP authentication from settings: static bearer tokens and/or JWT (key or JWKS)."""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Callable
from pathlib import Path

from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier

from mcp_server.errors import ConfigError
from mcp_server.settings import AuthSettings

#: Resolves a host name to its addresses (socket.getaddrinfo; tests pass their own).
Resolver = Callable[[str], list[str]]


class OpsMedicTokenVerifier(TokenVerifier):
    """Accepts a configured static token (client id = "token-<sha8>") or a valid JWT."""

    def __init__(self, settings: AuthSettings) -> None:
        super().__init__()
        self._static = {t.get_secret_value() for t in settings.tokens}
        self._jwt: JWTVerifier | None = None
        if settings.jwt_public_key or settings.jwt_jwks_uri:
            self._jwt = JWTVerifier(
                public_key=_read_key(settings.jwt_public_key),
                jwks_uri=settings.jwt_jwks_uri,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                algorithm=settings.jwt_algorithm,
            )

    async def verify_token(self, token: str) -> AccessToken | None:
        if token in self._static:
            digest = hashlib.sha256(token.encode()).hexdigest()[:8]
            return AccessToken(token=token, client_id=f"token-{digest}", scopes=[])
        if self._jwt is not None:
            found = await self._jwt.verify_token(token)
            return found if found is not None and _times_ok(found.claims or {}) else None
        return None


#: Clock skew allowed when checking `nbf` (seconds).
NBF_LEEWAY_S = 30


def _times_ok(claims: dict[str, object], now: float | None = None) -> bool:
    """A JWT must say when it expires (`exp`), and is not valid before its `nbf`."""
    now = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp < now:
        return False
    if nbf is None:
        return True
    return isinstance(nbf, int | float) and not isinstance(nbf, bool) and nbf <= now + NBF_LEEWAY_S


def build_auth(settings: AuthSettings) -> OpsMedicTokenVerifier | None:
    return OpsMedicTokenVerifier(settings) if settings.enabled else None


def check_bind(host: str, settings: AuthSettings, resolve: Resolver | None = None) -> None:
    """Refuse to serve a non-loopback address without authentication."""
    if settings.enabled or is_loopback(host, resolve or _resolve):
        return
    raise ConfigError(
        f"refusing to listen on {host} without authentication: set OPSMEDIC_AUTH__TOKENS "
        "(or OPSMEDIC_AUTH__JWT_PUBLIC_KEY / OPSMEDIC_AUTH__JWT_JWKS_URI), or bind 127.0.0.1"
    )


def is_loopback(host: str, resolve: Resolver) -> bool:
    """True when `host` is a loopback IP, or a name whose every address is loopback
    (`127.0.0.1.nip.io` is a name like any other: it is resolved, not pattern-matched)."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = resolve(host)
    except OSError:
        return False  # a name that does not resolve is not known to be loopback
    return bool(addresses) and all(_loopback_ip(a) for a in addresses)


def _loopback_ip(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _resolve(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None)]


def _read_key(value: str | None) -> str | None:
    if value is None or "-----BEGIN" in value:
        return value
    path = Path(value)
    if path.is_file():
        return path.read_text()
    return value  # a shared secret for HS* algorithms
