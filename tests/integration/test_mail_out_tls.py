"""The mail outbox over STARTTLS and implicit TLS with login, against a real aiosmtpd that
uses a private CA (a self-signed certificate made here)."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from mcp_server.backends.mail.outbox import Outbox
from mcp_server.safety.redaction import Redactor
from mcp_server.store.sqlite import SqliteStore
from tests.helpers import ManualClock
from tests.helpers import tls_pair as make_tls_pair
from tests.integration.test_mail_out import LATER, T0, smtp_settings
from tests.services import free_port


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(f"sqlite:///{tmp_path}/x.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


class _Keep:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.messages.append(
            cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))
        )
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ops", b"pw-1234")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only this self-signed certificate)."""
    return make_tls_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["starttls", "tls"])
def tls_server(
    request: pytest.FixtureRequest, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
) -> Iterator[tuple[str, int, _Keep]]:
    handler, port = _Keep(), free_port()
    kw: dict[str, Any] = {"authenticator": _auth, "auth_require_tls": True}
    if request.param == "starttls":
        kw.update(tls_context=tls_pair[0], require_starttls=True)
    else:  # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this socket is TLS
        kw.update(ssl_context=tls_pair[0], auth_require_tls=False)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    try:
        yield request.param, port, handler
    finally:
        controller.stop()


async def test_tls_modes_with_login(
    store: SqliteStore,
    tls_server: tuple[str, int, _Keep],
    tls_pair: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    mode, port, handler = tls_server
    base = {"tls": mode, "username": "ops", "timeout_s": 5}
    wrong = Outbox(
        store,
        smtp_settings("127.0.0.1", port, password="nope-nope", **base),
        Redactor(["nope-nope"]),
        ManualClock(T0),
        tls_context=tls_pair[1],
        max_attempts=1,
    )
    msg = await wrong.enqueue("ops@example.test", "s", "t")
    report = await wrong.flush()
    assert report.deferred == [msg.id] and "PASSWORD" in report.errors[msg.id]  # kept, not failed
    right = Outbox(
        store,
        smtp_settings("127.0.0.1", port, password="pw-1234", **base),
        Redactor(),
        ManualClock(T0),
        tls_context=tls_pair[1],
    )
    assert (await right.flush(T0 + LATER)).sent == [msg.id]
    assert [m["Subject"] for m in handler.messages] == ["s"]
