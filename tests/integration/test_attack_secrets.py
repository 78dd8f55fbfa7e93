"""Issue 12, attack 3: secrets in log lines, notes, RCAs and arguments must not reach a client,
the audit log or the dashboard API in clear. Counted over the whole corpus of secret shapes."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import Rca
from tests.helpers import http_server, make_settings
from tests.secret_corpus import CONFIGURED, SECRETS

MODES = [pytest.param({"mode": "legacy"}, id="legacy"), pytest.param({}, id="modern")]


def _through(text: str) -> list[str]:
    return [secret for _, secret in SECRETS if secret in text]


@pytest.fixture
def log_root(tmp_path: Path) -> Path:
    root = tmp_path / "logs"
    root.mkdir()
    body = "\n".join(line for line, _ in SECRETS)
    (root / "app.log").write_text(body + "\n\x1b[2J\u202eevil\n")
    return root


async def test_tail_logs_over_http_shows_no_secret(log_root: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"OPSMEDIC_LOG_ROOTS": str(log_root), "OPSMEDIC_SMTP__PASSWORD": CONFIGURED}
    with http_server(data, **env) as (base, _proc):
        async with Client(StreamableHttpTransport(base + "/mcp")) as c:
            r = await c.call_tool("tail_logs", {"source": f"file:{log_root}/app.log"})
            bad = await c.call_tool(
                "tail_logs", {"source": "file:/nope/DB_PASS=hunter4"}, raise_on_error=False
            )
        async with httpx.AsyncClient() as http:
            audit = (await http.get(base + "/api/audit", timeout=10)).text
    text = r.content[0].text + json.dumps(r.structured_content)
    print(f"tail_logs over HTTP: {len(_through(text))} of {len(SECRETS)} secrets got through")
    assert _through(text) == []
    assert "\x1b" not in text and "\u202e" not in text and "<U+202E>" in text
    assert "hunter4" not in bad.content[0].text
    assert "hunter4" not in audit and "DB_PASS=" in audit


@pytest.mark.parametrize("mode", MODES)
async def test_notes_rca_resources_prompts_and_audit_are_redacted(tmp_path: Path, mode) -> None:
    settings = make_settings(
        tmp_path, secret="hmac-key-0123456789abcdef", smtp={"password": CONFIGURED}
    )
    deps = Deps.build(settings)
    await deps.start()
    try:
        inc, _ = await deps.store.open_incident("container:web", "crashed", SECRETS[8][0])
        notes = "\n".join(line for line, _ in SECRETS)
        await deps.store.put_rca(Rca(incident_id=inc.id, summary=notes, category="config"))
        async with Client(create_server(deps.settings, deps, docker=False), **mode) as c:
            got = await c.call_tool("get_incident", {"incident_id": inc.id})
            await c.call_tool(
                "update_incident", {"incident_id": inc.id, "note": notes}, raise_on_error=False
            )
            again = await c.call_tool("get_incident", {"incident_id": inc.id})
            res = await c.read_resource(f"opsmedic://rca/{inc.id}")
            prompt = await c.get_prompt("rca", {"incident_id": str(inc.id)})
        entries = await deps.store.audit_entries()
    finally:
        await deps.stop()
    shown = [
        got.content[0].text,
        json.dumps(again.structured_content),
        res[0].text,
        json.dumps([m.content.text for m in prompt.messages]),
        json.dumps([e.model_dump(mode="json") for e in entries]),
    ]
    leaks = [_through(s) for s in shown]
    assert leaks == [[], [], [], [], []]


async def test_container_logs_and_health_output_are_redacted(
    tmp_path: Path, docker_host: str, docker_env
) -> None:
    body = "; ".join(f"echo {json.dumps(line)}" for line, _ in SECRETS[:12])
    health = {
        "test": ["CMD-SHELL", "echo password=hunter2 DB_PASS=hunter4 --token tok-998877"],
        "interval": 200_000_000,
    }
    box = docker_env.run("leaky", f"{body}; sleep 3600", healthcheck=health)
    name = box.name
    for _ in range(100):  # wait for the output and one health check
        box.reload()
        if box.attrs["State"].get("Health", {}).get("Log"):
            break
        await anyio.sleep(0.1)
    data = tmp_path / "data"
    data.mkdir()
    with http_server(data, DOCKER_HOST=docker_host) as (base, _proc):
        async with Client(StreamableHttpTransport(base + "/mcp")) as c:
            logs = await c.call_tool("tail_logs", {"source": f"container:{name}"})
            detail = await c.call_tool("inspect_container", {"name": name})
    shown = logs.content[0].text + detail.content[0].text + json.dumps(detail.structured_content)
    assert "hunter2" not in shown and "hunter4" not in shown and "tok-998877" not in shown
    assert _through(logs.content[0].text) == []
    assert "DB_PASS=" in detail.content[0].text  # the health output is shown, redacted
