"""The healing domain: targets, drivers, durable actions, holds, detection and reconciliation.

Nothing here talks to the world directly: drivers (mcp_server.drivers) do that for each kind
of target, and the store keeps the state that makes healing safe across processes.
"""
