"""The MCP surface through a real in-memory client, in both protocol eras."""

from __future__ import annotations

import json

import pytest
from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.deps import Deps
from mcp_server.models import utcnow
from tests.helpers import make_settings

MODES = [pytest.param({"mode": "legacy"}, id="legacy-2025-11-25"), pytest.param({}, id="modern")]


@pytest.fixture
async def deps(tmp_path):
    deps = Deps.build(make_settings(tmp_path, secret="s3cr3t-hmac-key-0123456789"))
    await deps.start()  # keep the store open across clients so tests can inspect it
    yield deps
    await deps.stop()


@pytest.fixture
def server(deps):
    return create_server(deps.settings, deps)


@pytest.mark.parametrize("mode", MODES)
async def test_tools_listed_with_annotations(server, mode):
    async with Client(server, **mode) as c:
        tools = {t.name: t for t in await c.list_tools()}
    assert {"write_audit_entry", "verify_audit", "list_incidents", "get_incident"} <= set(tools)
    assert tools["verify_audit"].annotations.read_only_hint is True
    assert tools["write_audit_entry"].annotations.read_only_hint is False
    assert all(t.description for t in tools.values())


@pytest.mark.parametrize("mode", MODES)
async def test_note_then_verify(server, deps, mode):
    async with Client(server, **mode) as c:
        r = await c.call_tool("write_audit_entry", {"event": "decided", "detail": "no action"})
        assert r.structured_content["seq"] >= 1
        v = await c.call_tool("verify_audit", {})
    assert v.structured_content["ok"] is True
    entries = await deps.store.audit_entries()
    tools = [e.tool for e in entries]
    # the note itself, plus the automatic record of both tool calls
    assert tools == ["note:decided", "write_audit_entry", "verify_audit"]
    assert {e.outcome for e in entries} == {"note", "ok"}


@pytest.mark.parametrize("mode", MODES)
async def test_errors_are_audited_and_actionable(server, deps, mode):
    async with Client(server, **mode) as c:
        r = await c.call_tool("get_incident", {"incident_id": 999}, raise_on_error=False)
        bad = await c.call_tool("list_incidents", {"status": "bogus"}, raise_on_error=False)
    assert r.is_error and "list_incidents" in r.content[0].text
    assert bad.is_error and "active" in bad.content[0].text
    entries = await deps.store.audit_entries()
    assert [(e.tool, e.outcome) for e in entries] == [
        ("get_incident", "error"),
        ("list_incidents", "error"),
    ]
    assert "no incident 999" in entries[0].args["_error"]


async def test_incidents_listed_and_detailed(server, deps):
    async with Client(server) as c:
        inc, created = await deps.store.open_incident("container:web", "died", "web died")
        again, created2 = await deps.store.open_incident("container:web", "died", "web died")
        assert created and not created2 and again.id == inc.id
        listed = await c.call_tool("list_incidents", {"status": "active"})
        one = await c.call_tool("get_incident", {"incident_id": inc.id})
    rows = listed.structured_content["incidents"]
    assert [(r["target"], r["count"]) for r in rows] == [("container:web", 2)]
    assert one.structured_content["count"] == 2
    assert [t["kind"] for t in one.structured_content["timeline"]][:2] == ["opened", "repeat"]


async def test_secrets_never_reach_the_audit_log(server, deps):
    async with Client(server) as c:
        await c.call_tool(
            "write_audit_entry",
            {"event": "x", "detail": "the key is s3cr3t-hmac-key-0123456789", "target": "host"},
        )
    raw = json.dumps([e.model_dump(mode="json") for e in await deps.store.audit_entries()])
    assert "s3cr3t-hmac-key-0123456789" not in raw
    assert "[REDACTED]" in raw


@pytest.mark.parametrize("mode", MODES)
async def test_audit_recent_resource(server, mode):
    async with Client(server, **mode) as c:
        await c.call_tool("write_audit_entry", {"event": "hello", "detail": "d"})
        contents = await c.read_resource("opsmedic://audit/recent")
    data = json.loads(contents[0].text)
    assert data["entries"][0]["seq"] > data["entries"][-1]["seq"]  # newest first
    assert any(e["tool"] == "note:hello" for e in data["entries"])


async def test_optional_arguments_advertised_compactly_but_null_still_accepted(server):
    async with Client(server) as c:
        tools = {t.name: t for t in await c.list_tools()}
        schema = tools["list_incidents"].input_schema["properties"]["status"]
        r = await c.call_tool("list_incidents", {"status": None})
    assert schema == {"type": "string"}  # not anyOf [string, null]
    assert r.structured_content["incidents"] == []


async def test_a_triage_claim_held_elsewhere_is_a_refusal_saying_when_to_look_again(server, deps):
    inc, _ = await deps.store.open_incident("container:web", "died", "web died")
    await deps.store.acquire_lease(f"triage:{inc.id}", "another-runner", 120.0, utcnow())
    async with Client(server) as c:
        claim = {"incident_id": inc.id, "claim": True, "note": "runner: triage started"}
        refused = await c.call_tool("update_incident", claim, raise_on_error=False)
    assert refused.is_error and "is diagnosing" in refused.content[0].text
    data = refused.structured_content or {}
    assert (data["rule"], data["wait_s"], data["escalate"]) == ("triage_claim", 10.0, False)
