"""/metrics over real HTTP parses with prometheus_client and moves when things happen:
MCP tool calls over streamable HTTP, a crashing container on the real Docker engine, and a
restart that policy refuses."""

from __future__ import annotations

import asyncio

import httpx
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import make_settings
from tests.integration.web_support import opsmedic_http

MANAGED = {"opsmedic.managed": "true"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(base: str) -> tuple[Samples, set[str]]:
    async with httpx.AsyncClient() as http:
        r = await http.get(base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(r.text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, families


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_metrics_move_with_tool_calls_incidents_and_actions(
    tmp_path, docker_host, docker_env
):
    settings = make_settings(tmp_path / "data", mode="check")
    async with opsmedic_http(settings) as (base, deps):
        before, families = await scrape(base)
        assert {
            "opsmedic_incidents", "opsmedic_actions", "opsmedic_restarts", "opsmedic_tool_calls",
            "opsmedic_tool_call_seconds", "opsmedic_ingest_events", "opsmedic_audit_chain_ok",
        } <= families  # fmt: skip
        assert total(before, "opsmedic_audit_chain_ok") == 1

        box = docker_env.run("metrics-crash", "sleep 0.5; exit 3", labels=MANAGED)
        target = f"container:{box.name}"
        async with Client(StreamableHttpTransport(base + "/mcp")) as mcp:
            incident_id = await _wait_incident(mcp, target)
            await mcp.call_tool("verify_audit", {})
            refused = await mcp.call_tool(
                "restart",
                {"target": target, "reason": "metrics test", "incident_id": incident_id},
                raise_on_error=False,
            )
        assert refused.is_error

        after, _ = await scrape(base)
        calls = "opsmedic_tool_calls_total"
        listed = total(after, calls, tool="list_incidents")
        assert listed > total(before, calls, tool="list_incidents")
        assert total(after, calls, tool="verify_audit", outcome="ok") == 1
        assert total(after, calls, tool="restart", outcome="refused") == 1
        count = "opsmedic_tool_call_seconds_count"
        assert total(after, count) == total(after, calls) > total(before, count)
        assert total(after, "opsmedic_actions_total", type="restart", outcome="refused") == 1
        assert total(after, "opsmedic_restarts_total") == 0  # refused: nothing restarted
        open_now = total(after, "opsmedic_incidents", state="open")
        assert open_now >= total(before, "opsmedic_incidents", state="open") + 1
        assert total(after, "opsmedic_events_total", source="incident") >= 1
        assert total(after, "opsmedic_audit_entries") > total(before, "opsmedic_audit_entries")
        assert total(after, "opsmedic_audit_chain_ok") == 1
        assert await deps.store.get_incident(incident_id) is not None


async def _wait_incident(mcp: Client, target: str) -> int:
    """Poll list_incidents (itself a counted tool call) until the detector opened one."""
    async with asyncio.timeout(30):
        while True:
            r = await mcp.call_tool("list_incidents", {"status": "active"})
            for row in r.structured_content.get("incidents", []):
                if row["target"] == target:
                    return int(row["id"])
            await asyncio.sleep(0.2)
