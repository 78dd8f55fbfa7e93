"""Ask the person at the client for a yes/no, in both protocol eras.

Handshake era (2025-11-25): a server-initiated elicitation/create request (ctx.elicit).
Stateless era (2026-07-28): return an InputRequiredResult carrying the elicitation; the client
asks the person and retries the same call with ctx.input_responses filled in.
"""

from __future__ import annotations

from typing import Any

import mcp_types as mt
from fastmcp import Context
from fastmcp.server.elicitation import AcceptedElicitation

KEY = "opsmedic_approve"
SCHEMA: dict[str, Any] = {
    "type": "object",
    # the same {"value": bool} shape ctx.elicit(response_type=bool) uses in the handshake era
    "properties": {"value": {"type": "boolean", "title": "Approve this exact action?"}},
    "required": ["value"],
}


def _client_can_elicit(ctx: Context) -> bool:
    try:
        params = ctx.session.client_params
        caps = params.capabilities if params is not None else None
    except (AttributeError, RuntimeError):
        return False
    return bool(caps is not None and caps.elicitation is not None)


async def ask_yes_no(ctx: Context, message: str) -> bool | mt.InputRequiredResult | None:
    """True / False for the person's answer; None when this client cannot be asked (the
    caller falls back to email); an InputRequiredResult to return as-is (stateless era)."""
    if not _client_can_elicit(ctx):
        return None
    if ctx._is_modern_protocol():
        answer = (ctx.input_responses or {}).get(KEY)
        if isinstance(answer, mt.ElicitResult):
            return answer.action == "accept" and (answer.content or {}).get("value") is True
        request = mt.ElicitRequest(
            params=mt.ElicitRequestFormParams(message=message, requested_schema=SCHEMA)
        )
        return mt.InputRequiredResult(input_requests={KEY: request})
    result = await ctx.elicit(message, response_type=bool)
    return isinstance(result, AcceptedElicitation) and result.data is True
