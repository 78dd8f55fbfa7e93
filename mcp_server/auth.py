"""HTTP authentication from settings: static bearer tokens and/or JWT (key or JWKS)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.auth.providers.jwt import JWTVerifier

from mcp_server.errors import ConfigError
from mcp_server.settings import AuthSettings

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


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
            return await self._jwt.verify_token(token)
        return None


def build_auth(settings: AuthSettings) -> OpsMedicTokenVerifier | None:
    return OpsMedicTokenVerifier(settings) if settings.enabled else None


def check_bind(host: str, settings: AuthSettings) -> None:
    """Refuse to serve a non-loopback address without authentication."""
    if host not in LOOPBACK_HOSTS and not host.startswith("127.") and not settings.enabled:
        raise ConfigError(
            f"refusing to listen on {host} without authentication: set OPSMEDIC_AUTH__TOKENS "
            "(or OPSMEDIC_AUTH__JWT_PUBLIC_KEY / OPSMEDIC_AUTH__JWT_JWKS_URI), or bind 127.0.0.1"
        )


def _read_key(value: str | None) -> str | None:
    if value is None or "-----BEGIN" in value:
        return value
    path = Path(value)
    if path.is_file():
        return path.read_text()
    return value  # a shared secret for HS* algorithms
