"""`opsmedic monitors run NAME` / `opsmedic monitors test NAME`, through the MCP surface."""

from __future__ import annotations

import json

from fastmcp import Client

from mcp_server.settings import Settings

EXIT = {"ok": 0, "warn": 0, "alert": 1}


async def monitors_command(settings: Settings, action: str, name: str) -> int:
    from mcp_server.app import create_server

    server = create_server(settings, docker=True)
    async with Client(server) as client:
        if action == "run":
            r = await client.call_tool("run_monitor", {"name": name}, raise_on_error=False)
            if r.is_error:
                print(f"opsmedic: {r.content[0].text}")
                return 2
            out = r.structured_content or {}
            print(f"monitor {name}: {out['verdict'].upper()}")
            for item in out["inputs"]:
                print(
                    f"  {item['label']}: {item['verdict']}"
                    + (f" ({item['note']})" if item["note"] else "")
                )
            for line in out["evidence"][-20:]:
                print(f"    {line}")
            return EXIT.get(out["verdict"], 1)
        deps = server.state_deps  # type: ignore[attr-defined]
        results = await deps.services.monitors.test(name)
        print(json.dumps(results, indent=1))
        return 0 if all(r["ok"] for r in results) else 1
