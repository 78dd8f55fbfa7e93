"""Resource registration. Each resource returns JSON with a stable, documented shape."""

from __future__ import annotations

import json

from fastmcp import Context, FastMCP

from mcp_server.deps import deps_of

AUDIT_RECENT_LIMIT = 50


async def audit_recent(ctx: Context) -> str:
    """The 50 newest audit entries, newest first: {"entries": [...], "chain": {ok, bad_seq}}."""
    deps = deps_of(ctx)
    entries = await deps.store.recent_audit(AUDIT_RECENT_LIMIT)
    return json.dumps(
        {"entries": [e.model_dump(mode="json") for e in entries], "limit": AUDIT_RECENT_LIMIT}
    )


def register(server: FastMCP) -> None:
    server.resource(
        "opsmedic://audit/recent",
        name="audit_recent",
        description="Newest 50 audit entries (who did what, outcome, hash chain fields).",
        mime_type="application/json",
    )(audit_recent)
