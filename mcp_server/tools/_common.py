"""Shared bits for tool modules: annotations, bounded output, argument parsing."""

from __future__ import annotations

from typing import Annotated, Any

from fastmcp import FastMCP
from fastmcp.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import Field

from mcp_server.errors import InvalidInput
from mcp_server.models import IncidentStatus

#: Integers a tool accepts: ids and cursors fit SQLite's and BSON's signed 64 bits.
MAX_INT = 2**63 - 1
IncidentId = Annotated[int, Field(ge=1, le=MAX_INT)]
Cursor = Annotated[int, Field(ge=0, le=MAX_INT)]

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)


def add_tool(server: FastMCP, fn: Any, annotations: ToolAnnotations) -> None:
    """Register a tool without an output schema: results are still structured JSON, but the
    catalogue a model reads on every turn stays small (see test_tool_catalogue_stays_small)."""
    tool = Tool.from_function(fn, annotations=annotations, output_schema=None)
    tool.parameters = compact_schema(tool.parameters)
    server.add_tool(tool)


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Advertise `x: T | None = None` as an optional `T` (leave it out for None) instead of
    `anyOf: [T, null], default: null`. Arguments are still validated against the signature,
    so an explicit null is accepted; only the text every model reads gets shorter."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        return schema
    out = dict(schema)
    out["properties"] = {name: _unnull(p) for name, p in props.items()}
    return out


def _unnull(prop: dict[str, Any]) -> dict[str, Any]:
    options = prop.get("anyOf")
    if prop.get("default", 0) is not None or not isinstance(options, list) or len(options) != 2:
        return prop
    kept = [o for o in options if o != {"type": "null"}]
    if len(kept) != 1:
        return prop
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    return {**kept[0], **rest}


#: Default cap for any text an LLM reads from one tool call.
MAX_OUTPUT_CHARS = 12_000


def bounded(text: str, max_chars: int = MAX_OUTPUT_CHARS) -> str:
    """Cut text to max_chars with a visible note saying how much was left out."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n…[cut: {len(text) - max_chars} more chars not shown]"


def bounded_tail(text: str, max_chars: int = MAX_OUTPUT_CHARS) -> str:
    """Keep the *end* of text (the newest log lines), with a note about what was dropped."""
    if len(text) <= max_chars:
        return text
    return f"…[cut: {len(text) - max_chars} earlier chars not shown]\n" + text[-max_chars:]


def bounded_list(items: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """First `limit` items plus a note when some were cut."""
    if len(items) <= limit:
        return items, None
    return items[:limit], f"showing {limit} of {len(items)}; narrow the query to see the rest"


def parse_statuses(status: str | None) -> list[IncidentStatus] | None:
    """ "open,healing" -> [IncidentStatus.open, IncidentStatus.healing]; "active" = not resolved."""
    if not status:
        return None
    if status.strip().lower() == "active":
        return [s for s in IncidentStatus if s is not IncidentStatus.resolved]
    out = []
    for part in status.split(","):
        try:
            out.append(IncidentStatus(part.strip().lower()))
        except ValueError:
            allowed = ", ".join(s.value for s in IncidentStatus)
            raise InvalidInput(
                f"unknown incident status {part.strip()!r}: use one of {allowed}, or 'active'"
            ) from None
    return out
