"""Which tools a client sees: a read-only server is read-only in its catalogue too.

In observe mode (OPSMEDIC_MODE=observe) tools that write or destroy (annotations not
read-only) are neither listed nor callable; OPSMEDIC_TOOLS__DISABLE removes named tools in
any mode. A call to a hidden tool is refused (and audited) with the setting that allows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp_types as mt
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool
from fastmcp.tools.base import ToolResult

from mcp_server.errors import Refused
from mcp_server.settings import Settings


class CatalogueMiddleware(Middleware):
    def __init__(self, settings: Settings) -> None:
        self.observe = settings.mode == "observe"
        self.disabled = {name.strip() for name in settings.tools.disable if name.strip()}

    def hidden_reason(self, name: str, annotations: Any) -> str | None:
        """Why tool `name` is not offered, or None when it is."""
        if name in self.disabled:
            return (
                f"tool {name!r} is disabled on this server by OPSMEDIC_TOOLS__DISABLE; "
                "an operator can remove it from that list to allow it"
            )
        read_only = annotations is not None and annotations.read_only_hint is True
        if self.observe and not read_only:
            return (
                f"tool {name!r} changes things and this server runs read-only "
                "(OPSMEDIC_MODE=observe); an operator can set OPSMEDIC_MODE=check or heal to "
                "allow it"
            )
        return None

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        tools = await call_next(context)
        return [t for t in tools if self.hidden_reason(t.name, t.annotations) is None]

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        if self.observe or self.disabled:
            name = context.message.name
            ctx = context.fastmcp_context
            try:
                tool = await ctx.fastmcp.get_tool(name) if ctx is not None else None
            except Exception:  # unknown tool: the server's own error says so
                tool = None
            if tool is not None:
                reason = self.hidden_reason(name, tool.annotations)
                if reason is not None:
                    raise Refused(reason)
        return await call_next(context)
