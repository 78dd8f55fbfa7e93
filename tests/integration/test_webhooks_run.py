"""Webhook deliveries with real `opsmedic run` processes: queued while the receiver is down,
they survive a SIGKILL (the successor delivers each exactly once), and two processes on one
store (SQLite file or MongoDB) deliver each (event, channel) exactly once between them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from mcp_server.models import Message
from mcp_server.store.base import open_store
from tests.helpers import free_port, wait_until
from tests.integration._run_support import OpsRun, cli
from tests.integration.webhook_support import Receiver

TOKEN = "run-hook-token-8c1d"


def config(tmp: Path, receiver: Receiver) -> Path:
    path = tmp / "opsmedic.toml"
    path.write_text(f"""
[[probes]]
name = "api"
kind = "tcp"
host = "127.0.0.1"
port = {free_port()}
interval_s = 1
timeout_s = 1

[notify]
dashboard_url = "https://ops.example.test"

[[notify.webhooks]]
name = "siem"
url = "{receiver.url("/hook")}"
format = "json"
secret_header = "X-OpsMedic-Token: ${{OPS_HOOK_TOKEN}}"
timeout_s = 2
retry_base_s = 0.2
retry_max_s = 1
max_attempts = 100
""")
    return path


def hook_rows(data_dir: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{data_dir / 'opsmedic.db'}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        sql = "SELECT id, status, attempts, last_error FROM messages WHERE direction = 'hook'"
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_deliveries_pending_at_a_kill_go_out_once_after_the_restart(tmp_path: Path) -> None:
    receiver = Receiver()  # down: its port refuses connections
    data = tmp_path / "data"
    env = {"OPSMEDIC_CONFIG": str(config(tmp_path, receiver)), "OPS_HOOK_TOKEN": TOKEN}
    first = OpsRun(tmp_path, "first", "--mode", "check", data_dir=data, **env).start()
    try:
        wait_until(lambda: any(r["attempts"] >= 2 for r in hook_rows(data)), timeout=60)
        health = httpx.get(first.base + "/healthz", timeout=10).text
        assert "webhooks" in health and "receiver not answering" in health
        assert TOKEN not in health
        first.kill()  # SIGKILL: no shutdown, the lease and queued rows stay as they were
        pending = hook_rows(data)
        assert pending and all(r["status"] == "queued" for r in pending)
    finally:
        first.close()
    receiver.up()
    second = OpsRun(tmp_path, "second", "--mode", "check", data_dir=data, **env).start()
    try:

        def all_sent() -> list[dict[str, Any]] | None:
            rows = hook_rows(data)
            return rows if rows and all(r["status"] == "sent" for r in rows) else None

        rows = wait_until(all_sent, timeout=90, interval=0.2)
        deliveries = Counter(p.delivery for p in receiver.posts)
        # (a loaded test machine may open a host incident meanwhile: its row comes later)
        assert {r["id"] for r in rows} <= set(deliveries) <= {r["id"] for r in hook_rows(data)}
        assert set(deliveries.values()) == {1}, deliveries  # exactly once per (event, channel)
        assert {r["id"] for r in pending} <= set(deliveries)
        assert all(p.headers["x-opsmedic-token"] == TOKEN for p in receiver.posts)
        opened = [p.json for p in receiver.posts if p.json["event"] == "opened"]
        opened = [o for o in opened if o["incident"]["target"] == "probe:api"]
        assert len(opened) == 1
        assert opened[0]["incident"]["url"].startswith("https://ops.example.test/incidents/")
        # each delivery is audited right after its row is marked sent; /metrics counts those
        metrics = wait_until(lambda: _sent_metric(second.base, len(rows)), timeout=30)
        status = wait_until(lambda: _status_shows(data, env, "siem: sent"), timeout=30)
        assert TOKEN not in status and receiver.url("/hook") not in status
        logs = first.log() + second.log()
        assert TOKEN not in logs and TOKEN not in metrics
        assert "webhooks failed" not in logs and "webhook flush failed" not in logs
    finally:
        second.close()
        receiver.down()


def _sent_metric(base: str, at_least: int) -> str | None:
    text = httpx.get(base + "/metrics", timeout=10).text
    name = 'opsmedic_webhook_deliveries_total{channel="siem",outcome="sent"} '
    sent = [float(m.removeprefix(name)) for m in text.splitlines() if m.startswith(name)]
    return text if sent and sent[0] >= at_least else None


def _status_shows(data: Path, env: dict[str, str], text: str) -> str | None:
    """`opsmedic status` output once its webhooks duty line shows `text` (it is refreshed
    with the instance's heartbeat)."""
    out = cli(data, "status", **env).stdout
    return out if any("webhooks" in line and text in line for line in out.splitlines()) else None


def stored_hooks(url: str) -> list[Message]:
    async def read() -> list[Message]:
        store = open_store(url)
        await store.open()
        try:
            return [m for m in await store.list_messages(limit=500) if m.direction == "hook"]
        finally:
            await store.close()

    return asyncio.run(read())


def test_two_processes_on_one_store_deliver_each_event_once(tmp_path: Path, store_url: str) -> None:
    receiver = Receiver()
    env = {"OPSMEDIC_CONFIG": str(config(tmp_path, receiver)), "OPS_HOOK_TOKEN": TOKEN,
           "OPSMEDIC_STORE_URL": store_url}  # fmt: skip
    runs = [OpsRun(tmp_path, f"n{i}", "--mode", "check", **env) for i in range(2)]
    try:
        for run in runs:
            run.start()
        wait_until(lambda: any(m.attempts >= 2 for m in stored_hooks(store_url)), timeout=60)
        receiver.up()

        def all_sent() -> list[Message] | None:
            rows = stored_hooks(store_url)
            return rows if rows and all(m.status == "sent" for m in rows) else None

        rows = wait_until(all_sent, timeout=90, interval=0.3)
        deliveries = Counter(p.delivery for p in receiver.posts)
        later = {m.id for m in stored_hooks(store_url)}  # a host incident may come meanwhile
        assert {m.id for m in rows} <= set(deliveries) <= later
        assert set(deliveries.values()) == {1}, deliveries
        # both processes probe the same port; the store opened one incident between them
        probe = [
            p.json["event"] for p in receiver.posts if p.json["incident"]["target"] == "probe:api"
        ]
        assert probe.count("opened") == 1
    finally:
        for run in runs:
            run.close()
        receiver.down()
