"""Issue 12, attack 4: send_email to an address nobody configured, or with a smuggled header,
against a real `opsmedic serve --http` and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from tests.conftest import SmtpSink
from tests.helpers import http_server

ATTACKS = [
    ["attacker@evil.example"],
    ["victim@example.com\r\nBcc: hidden@evil.example"],
    ["ops@example.test, hidden@evil.example"],
    ["ops@example.test\nBcc: hidden@evil.example"],
    ["Ops <ops@example.test>, hidden@evil.example"],
    ["hidden@evil.example (ops@example.test)"],
    ["ops@example.test.evil.example"],
]


@pytest.fixture
def server(tmp_path: Path, smtp_server: SmtpSink):
    env = {
        "OPSMEDIC_SMTP__HOST": smtp_server.host,
        "OPSMEDIC_SMTP__PORT": str(smtp_server.port),
        "OPSMEDIC_NOTIFY__TO": "ops@example.test",
        "OPSMEDIC_APPROVERS": "boss@example.test",
        "OPSMEDIC_NOTIFY__ALLOW": "partner.example,friend@other.example",
    }
    with http_server(tmp_path, **env) as (base, _proc):
        yield base


async def test_mail_goes_only_where_an_operator_said(server: str, smtp_server: SmtpSink) -> None:
    async with Client(StreamableHttpTransport(server + "/mcp")) as c:
        refused = []
        for to in ATTACKS:
            r = await c.call_tool(
                "send_email", {"subject": "s", "body": "b", "to": to}, raise_on_error=False
            )
            refused.append(r.is_error)
            assert "OPSMEDIC_NOTIFY__ALLOW" in r.content[0].text or "one" in r.content[0].text
        ok = await c.call_tool(
            "send_email",
            {"subject": "s", "body": "b", "to": ["a@partner.example", "friend@other.example"]},
        )
        default = await c.call_tool("send_email", {"subject": "s2", "body": "b"})
        boss = await c.call_tool(
            "send_email", {"subject": "s3", "body": "b", "to": ["Boss <boss@example.test>"]}
        )
        async with httpx.AsyncClient() as http:
            audit = (await http.get(server + "/api/audit?limit=100", timeout=10)).json()
    assert refused == [True] * len(ATTACKS)
    assert ok.structured_content["status"] == "sent"
    assert default.structured_content["status"] == "sent"
    assert boss.structured_content["status"] == "sent"
    rcpts = [sorted(e.rcpt_tos) for e in smtp_server.envelopes]
    assert rcpts == [
        ["a@partner.example", "friend@other.example"],
        ["ops@example.test"],
        ["boss@example.test"],
    ]
    assert not any("evil" in str(m) for m in smtp_server.messages)
    rows = audit["entries"] if isinstance(audit, dict) else audit
    outcomes = [r["outcome"] for r in rows if r.get("tool") == "send_email"]
    assert outcomes.count("refused") + outcomes.count("error") == len(ATTACKS), json.dumps(rows)


async def test_message_ids_in_headers_are_never_encoded(
    tmp_path: Path, smtp_server: SmtpSink
) -> None:
    from mcp_server.backends.mail.outbox import Outbox
    from mcp_server.safety.approval_tokens import token_message_id
    from mcp_server.safety.redaction import Redactor
    from mcp_server.settings import SmtpSettings
    from mcp_server.store.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{tmp_path}/x.db")
    await store.open()
    try:
        smtp = SmtpSettings.model_validate(
            {"host": smtp_server.host, "port": smtp_server.port, "from": "ops@example.test"}
        )
        box = Outbox(store, smtp, Redactor())
        ref = token_message_id("a" * 40 + "-" + "b" * 60, "example.test")
        await box.enqueue(
            "boss@example.test", "approve?", "x", headers={"References": ref, "In-Reply-To": ref}
        )
        await box.flush()
    finally:
        await store.close()
    raw = bytes(smtp_server.envelopes[-1].original_content or b"")
    assert b"=?utf-8?" not in raw
    assert f"References: {ref}".encode() in raw and f"In-Reply-To: {ref}".encode() in raw
