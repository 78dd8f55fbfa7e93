"""Schema fuzz (issue 12): every tool, >= 200 generated argument sets in both protocol eras.
The server must answer each call with a well-formed result or error, never crash or leak a
traceback, and the audit chain must still verify afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from fastmcp import Client
from fastmcp.exceptions import ToolError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError

from mcp_server.app import create_server
from mcp_server.deps import Deps
from tests.helpers import make_settings

MODES = [pytest.param({"mode": "legacy"}, id="legacy"), pytest.param({}, id="modern")]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
)
#: Keep the long-poll short: a fuzzed 120 s wait proves nothing.
CAPS = {("wait_for_events", "timeout_s"): 0.05}


def value_for(schema: dict[str, Any], defs: dict[str, Any], tool: str, name: str) -> Any:
    if "$ref" in schema:
        return value_for(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, tool, name)
    if "anyOf" in schema:
        return st.one_of([value_for(s, defs, tool, name) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1))
    if kind == "number":
        high = CAPS.get((tool, name), schema.get("maximum", 1e9))
        return st.floats(schema.get("minimum", -1e9), high, allow_nan=False)
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=60)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(value_for(schema.get("items", {}), defs, tool, name), max_size=3)
    if kind == "object":
        return arguments(schema, defs, tool)
    return JUNK


def arguments(schema: dict[str, Any], defs: dict[str, Any], tool: str) -> Any:
    props = schema.get("properties", {})
    required = set(schema.get("required", [])) | {k for (t, k) in CAPS if t == tool}
    fields = {
        k: st.one_of(value_for(p, defs, tool, k), JUNK) if (tool, k) not in CAPS else
        value_for(p, defs, tool, k)
        for k, p in props.items()
    }  # fmt: skip
    return st.fixed_dictionaries(
        {k: v for k, v in fields.items() if k in required},
        optional={k: v for k, v in fields.items() if k not in required},
    )


def _examples(strategy: Any) -> list[dict[str, Any]]:
    """200 argument sets drawn by Hypothesis (the calls are made by the async test)."""
    out: list[dict[str, Any]] = []

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def collect(args: dict[str, Any]) -> None:
        out.append(args)

    collect()
    return out


@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_answers_fuzzed_arguments(tmp_path, mode) -> None:
    deps = Deps.build(make_settings(tmp_path, log_roots=[str(tmp_path)]))
    server = create_server(deps.settings, deps, docker=False)
    calls = 0
    few: list[str] = []  # tools with fewer distinct argument sets than 200 (no arguments)
    async with Client(server, **mode) as c:
        tools = await c.list_tools()
        for tool in tools:
            schema = tool.input_schema
            strategy = arguments(schema, schema.get("$defs", {}), tool.name)
            examples = _examples(strategy)
            if len(examples) < 200:
                few.append(tool.name)
            for args in examples:
                calls += 1
                try:
                    r = await c.call_tool(tool.name, args, raise_on_error=False)
                except (ToolError, MCPError) as exc:  # a protocol-level error is an answer too
                    assert "Traceback" not in str(exc)
                    continue
                assert isinstance(r.is_error, bool) and r.content is not None
                assert "Traceback" not in str(r.content)
        verdict = await c.call_tool("verify_audit", {})
    print(f"schema fuzz ({mode or 'modern'}): {calls} calls over {len(tools)} tools")
    assert calls >= 200 * (len(tools) - len(few)) and set(few) <= {"verify_audit"}
    assert verdict.structured_content["ok"] is True
