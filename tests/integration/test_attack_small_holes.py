"""Issue 12, item 7: the small holes, each tried against the real server or command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from fastmcp.server.auth.providers.jwt import RSAKeyPair
from joserfc import jwk, jwt

from agent_runner.main import CLIENT_INFO
from mcp_server.auth import is_loopback
from tests.helpers import http_server
from tests.integration.test_cli import run

ISSUER, AUDIENCE = "https://issuer.test", "opsmedic"
ACCEPT = {"Accept": "application/json, text/event-stream"}


def _rpc(base: str, body: str, session: str | None = None) -> tuple[dict[str, Any], httpx.Response]:
    headers = {**ACCEPT, "Content-Type": "application/json"}
    if session:
        headers["mcp-session-id"] = session
    r = httpx.post(base + "/mcp", content=body, headers=headers, timeout=10)
    text = r.text
    if "text/event-stream" in r.headers.get("content-type", ""):
        text = next(line[5:] for line in text.splitlines() if line.startswith("data:"))
    return (json.loads(text) if text.strip() else {}), r


def _session(base: str) -> str:
    init = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
    _, r = _rpc(base, body)
    session = r.headers["mcp-session-id"]
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    httpx.post(base + "/mcp", content=note, headers={**ACCEPT, "mcp-session-id": session})
    return session


def test_huge_and_infinite_integers_are_refused_and_audited(tmp_path: Path) -> None:
    with http_server(tmp_path) as (base, _proc):
        session = _session(base)
        answers = []
        for i, raw in enumerate(["1e999", str(2**70), "-1", '"12x"']):
            body = (
                f'{{"jsonrpc":"2.0","id":{i + 10},"method":"tools/call","params":'
                f'{{"name":"get_incident","arguments":{{"incident_id":{raw}}}}}}}'
            )
            answers.append(_rpc(base, body, session)[0])
        audit = httpx.get(base + "/api/audit?limit=50", timeout=10).json()
    for answer in answers:
        result = answer.get("result") or {}
        error = answer.get("error")
        assert result.get("isError") is True or (error and error.get("code") != 0), answer
        text = json.dumps(answer)
        assert "OverflowError" not in text and "audit log could not be written" not in text
    rows = audit["entries"] if isinstance(audit, dict) else audit
    assert sum(1 for r in rows if r["tool"] == "get_incident") == 4


def test_run_refuses_public_bind_in_one_line(tmp_path: Path) -> None:
    out = run("run", OPSMEDIC_DATA_DIR=str(tmp_path), OPSMEDIC_HTTP__HOST="0.0.0.0")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.count("\n") == 1 and "authentication" in out.stderr


def test_loopback_check_resolves_names() -> None:
    def fake(addresses: list[str]) -> Any:
        return lambda _host: addresses

    assert is_loopback("127.0.0.1", fake([]))
    assert is_loopback("::1", fake([]))
    assert not is_loopback("0.0.0.0", fake([]))
    assert not is_loopback("127.0.0.1.nip.io", fake(["127.0.0.1", "192.0.2.7"]))
    assert not is_loopback("127.0.0.1.nip.io", fake(["192.0.2.7"]))
    assert is_loopback("db.internal", fake(["127.0.0.1", "::1"]))
    assert is_loopback("localhost", lambda h: ["127.0.0.1"])


def test_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for args in (["serve", "--http"], ["run"]):
        out = run(*args, OPSMEDIC_DATA_DIR=str(blocker / "data"))
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.count("\n") == 1 and "OPSMEDIC_DATA_DIR" in out.stderr
        assert "Traceback" not in out.stderr


def _token(keypair: RSAKeyPair, **claims: Any) -> str:
    key = jwk.import_key(keypair.private_key.get_secret_value(), "RSA")
    payload = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "iat": int(time.time())}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode({"alg": "RS256"}, payload, key, algorithms=["RS256"])


def test_jwt_needs_exp_and_honours_nbf(tmp_path: Path) -> None:
    keypair = RSAKeyPair.generate()
    env = {
        "OPSMEDIC_AUTH__JWT_PUBLIC_KEY": keypair.public_key,
        "OPSMEDIC_AUTH__JWT_ISSUER": ISSUER,
        "OPSMEDIC_AUTH__JWT_AUDIENCE": AUDIENCE,
    }
    now = int(time.time())
    tokens = {
        "no exp": _token(keypair),
        "future nbf": _token(keypair, exp=now + 3600, nbf=now + 1800),
        "good": _token(keypair, exp=now + 3600, nbf=now - 5),
    }
    with http_server(tmp_path, **env) as (base, _proc):
        codes = {
            name: httpx.get(
                base + "/api/overview", headers={"Authorization": f"Bearer {t}"}, timeout=10
            ).status_code
            for name, t in tokens.items()
        }
    assert codes == {"no exp": 401, "future nbf": 401, "good": 200}


async def test_names_checked_and_actor_marked_self_declared(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    with http_server(tmp_path, **env) as (base, _proc):
        transport = StreamableHttpTransport(base + "/mcp")
        async with Client(transport, client_info=CLIENT_INFO) as c:
            walk = await c.call_tool(
                "inspect_container", {"name": "../images/busybox"}, raise_on_error=False
            )
            await c.call_tool("write_audit_entry", {"event": "decided", "detail": "x"})
        async with httpx.AsyncClient() as http:
            rows = (await http.get(base + "/api/audit?limit=20", timeout=10)).json()
    assert walk.is_error and "not a container name" in walk.content[0].text
    rows = rows["entries"] if isinstance(rows, dict) else rows
    actors = {r["actor"] for r in rows if r["tool"] in ("inspect_container", "write_audit_entry")}
    assert actors == {"opsmedic-runner (self-declared)"}
