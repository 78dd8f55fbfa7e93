"""A real `opsmedic serve --http` subprocess on a loopback socket: auth, Host/Origin, eras."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.server.auth.providers.jwt import RSAKeyPair

from tests.helpers import OPSMEDIC, REPO, clean_env, http_server

TOKEN = "static-token-for-tests-0123"
ISSUER = "https://issuer.test"
AUDIENCE = "opsmedic"


@pytest.fixture(scope="module")
def keypair() -> RSAKeyPair:
    return RSAKeyPair.generate()


@pytest.fixture(scope="module")
def server(tmp_path_factory, keypair):
    data = tmp_path_factory.mktemp("http")
    env = {
        "OPSMEDIC_AUTH__TOKENS": TOKEN,
        "OPSMEDIC_AUTH__JWT_PUBLIC_KEY": keypair.public_key,
        "OPSMEDIC_AUTH__JWT_ISSUER": ISSUER,
        "OPSMEDIC_AUTH__JWT_AUDIENCE": AUDIENCE,
    }
    with http_server(data, **env) as (base, _proc):
        yield base, data


def _init_body() -> dict:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }


def _post(base: str, headers: dict[str, str]) -> httpx.Response:
    h = {"Accept": "application/json, text/event-stream", **headers}
    return httpx.post(base + "/mcp", json=_init_body(), headers=h, timeout=10)


@pytest.mark.parametrize("mode", [{"mode": "legacy"}, {}], ids=["legacy", "modern"])
async def test_tool_calls_with_static_token(server, mode):
    base, _ = server
    transport = StreamableHttpTransport(base + "/mcp", auth=TOKEN)
    async with Client(transport, **mode) as c:
        r = await c.call_tool("write_audit_entry", {"event": "http", "detail": "x"})
        v = await c.call_tool("verify_audit", {})
    assert r.structured_content["seq"] >= 1 and v.structured_content["ok"] is True


async def test_valid_jwt_is_accepted(server, keypair):
    base, _ = server
    token = keypair.create_token(subject="alice", issuer=ISSUER, audience=AUDIENCE)
    async with Client(StreamableHttpTransport(base + "/mcp", auth=token)) as c:
        v = await c.call_tool("verify_audit", {})
    assert v.structured_content["ok"] is True


def test_rejections_are_401_with_www_authenticate(server, keypair):
    base, _ = server
    expired = keypair.create_token(issuer=ISSUER, audience=AUDIENCE, expires_in_seconds=-60)
    wrong_aud = keypair.create_token(issuer=ISSUER, audience="someone-else")
    other_key = RSAKeyPair.generate().create_token(issuer=ISSUER, audience=AUDIENCE)
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {wrong_aud}"},
        {"Authorization": f"Bearer {other_key}"},
    ):
        r = _post(base, headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_bad_host_and_origin_rejected_and_nothing_runs(server):
    base, _data = server
    auth = {"Authorization": f"Bearer {TOKEN}"}
    before = _audit_count(base)
    evil_host = _post(base, {**auth, "Host": "evil.example.com"})
    evil_origin = _post(base, {**auth, "Origin": "http://evil.example.com"})
    assert evil_host.status_code in (403, 421), evil_host.text
    assert evil_origin.status_code in (403, 421), evil_origin.text
    assert _audit_count(base) == before


def _audit_count(base: str) -> int:
    import asyncio

    async def count() -> int:
        async with Client(StreamableHttpTransport(base + "/mcp", auth=TOKEN)) as c:
            text = (await c.read_resource("opsmedic://audit/recent"))[0].text
        import json

        return max((e["seq"] for e in json.loads(text)["entries"]), default=0)

    # reading the resource is not a tool call, so it does not add audit entries itself
    return asyncio.run(count())


def test_healthz(server):
    base, _ = server
    r = httpx.get(base + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["store"] is True


def test_public_bind_without_auth_refuses_to_start(tmp_path):
    proc = subprocess.run(
        [*OPSMEDIC, "serve", "--http", "--host", "0.0.0.0", "--port", "0"],
        env=clean_env(OPSMEDIC_DATA_DIR=str(tmp_path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "without authentication" in proc.stderr
    assert "Traceback" not in proc.stderr
