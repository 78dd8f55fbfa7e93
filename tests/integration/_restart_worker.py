"""A second OpsMedic process for the lease test: restart one container through MCP, print JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from fastmcp import Client

from mcp_server.app import create_server
from mcp_server.settings import Settings


async def main(store_url: str, data_dir: str, target: str, start_at: float) -> None:
    settings = Settings.model_validate(
        {"data_dir": data_dir, "store_url": store_url, "mode": "heal",
         "policy": {"verify_stable_s": 6.0, "auto_restart": False}}
    )  # fmt: skip
    async with Client(create_server(settings)) as client:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # both processes start together
        r = await client.call_tool(
            "restart", {"target": target, "reason": "lease test"}, raise_on_error=False
        )
    text = r.content[0].text if r.is_error else json.dumps(r.structured_content)
    print(json.dumps({"error": r.is_error, "text": text}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
