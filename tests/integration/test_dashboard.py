"""The dashboard in a real headless Chromium, against the real server and Docker engine.

Chromium is driven over the Chrome DevTools Protocol with `websockets`; every console
error, uncaught exception and failed resource load is collected and must stay empty.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from mcp_server.models import Approval, IncidentStatus
from tests.helpers import REPO, make_settings, swap
from tests.integration.web_support import opsmedic_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
MANAGED = {"opsmedic.managed": "true"}
CRASH = (
    "echo starting; sleep 1; echo 'fatal: cannot reach db <script>alert(1)</script>' >&2; exit 3"
)

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="chromium missing: run scripts/install-deps.sh"
)


class Page:
    """One page target over CDP: commands by id, events collected, console errors kept."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):  # Chromium is killed at the end
            await self._dispatch()

    async def _dispatch(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                future = self.waiting.pop(msg["id"], None)
                if future is not None and not future.done():
                    future.set_result(msg)
            else:
                self._on_event(msg["method"], msg.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [a.get("value", a.get("description", "")) for a in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(
                f"log ({entry.get('source')}): {entry['text']} {entry.get('url', '')}"
            )

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise AssertionError(f"CDP {method} failed: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
        """Poll a JS expression until it is truthy; return its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && document.body.dataset.ready")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """Headless Chromium on a DevTools port it picks itself; killed by pid afterwards."""
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--window-size=1360,1700", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    drain: asyncio.Task[None] | None = None
    try:
        port = await _devtools_port(proc)
        drain = asyncio.create_task(_drain(proc))  # a full stderr pipe would stall Chromium
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with websockets.connect(page_url, max_size=None) as ws:
            page = Page(ws)
            try:
                for domain in ("Runtime", "Log", "Page"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                page.reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        if drain is not None:
            drain.cancel()


async def _devtools_port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stderr is not None
    seen: list[str] = []
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stderr.readline()).decode(errors="replace")
            if not line:
                raise AssertionError("chromium exited before DevTools started:\n" + "".join(seen))
            seen.append(line)
            if "DevTools listening on ws://" in line:
                address = line.split("ws://", 1)[1].split("/", 1)[0]
                return int(address.rsplit(":", 1)[1])


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stderr is not None
    while await proc.stderr.read(65536):
        pass


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _js(value: str) -> str:
    return json.dumps(value)  # a JS string literal for a value put into an expression


async def test_dashboard_shows_a_crash_live_without_console_errors(
    tmp_path, docker_host, docker_env
):
    settings = make_settings(tmp_path / "data", mode="check")
    async with opsmedic_http(settings) as (base, deps), chromium(tmp_path / "profile") as page:
        await page.goto(base + "/")
        await page.wait_for("document.getElementById('live').textContent === 'live'")
        await page.wait_for("document.querySelectorAll('#chart-cpu canvas').length === 1")
        await page.evaluate("window.__sameDocument = 42")

        box = docker_env.run("dash-crash", CRASH, labels=MANAGED)
        target = f"container:{box.name}"
        selector = f"#incidents li[data-target={_js(target)}]"
        found = await page.wait_for(
            f"(document.querySelector({_js(selector)}) || {{}}).textContent", timeout=30
        )
        assert box.name in found and "exit" in found.lower()
        assert await page.evaluate("window.__sameDocument") == 42, "the page was reloaded"
        await page.wait_for(f"!!document.querySelector('#targets tr[data-target={_js(target)}]')")
        health = "(document.querySelector('#cards .card') || {}).textContent || ''"
        card = await page.wait_for(f"{health}.includes({_js(target)}) && {health}", timeout=30)
        assert card.startswith("health score") and f"{target} " in card  # the health score
        await page.screenshot(ARTIFACTS / "dashboard.png")

        incident_id = int(
            await page.evaluate(f"document.querySelector({_js(selector)}).dataset.id")
        )
        await page.goto(f"{base}/incidents/{incident_id}")
        await page.wait_for("document.querySelectorAll('#inc-timeline li').length >= 1")
        title = await page.evaluate("document.getElementById('inc-title').textContent")
        assert f"#{incident_id}" in title
        await page.screenshot(ARTIFACTS / "incident.png")

        assert page.errors == []
        stored = await deps.store.get_incident(incident_id)
        assert stored is not None and stored.target == target


async def test_untrusted_text_is_shown_as_text_not_markup(tmp_path):
    settings = make_settings(tmp_path / "data")
    async with opsmedic_http(settings, docker=False) as (base, deps):
        evil = '<img src=x onerror="window.__pwned=1"> boom'
        inc, _ = await deps.services.incidents.report("process:evil", "exited", evil)
        async with chromium(tmp_path / "profile") as page:
            await page.goto(base + "/")
            await page.wait_for("!!document.querySelector('#incidents li')")
            text = await page.evaluate(
                "document.querySelector('#incidents li .inc-title').textContent"
            )
            assert text == evil
            assert await page.evaluate("document.querySelectorAll('#incidents img').length") == 0
            assert await page.evaluate("window.__pwned") is None
            assert page.errors == []
    assert inc.title == evil


async def test_an_operator_with_a_token_approves_from_the_incident_page(tmp_path):
    token = "operator-token-for-browser-7"
    settings = make_settings(tmp_path / "data", auth={"tokens": token})
    decided: list[tuple[str, str, str]] = []

    class Approvals:  # stands in for the approval desk: the web path is what is tested here
        async def decide_from_dashboard(self, approval_id: str, decision: str, actor: str) -> dict:
            decided.append((approval_id, decision, actor))
            return {"status": "approved", "message": f"approved by {actor}"}

    async with opsmedic_http(settings, docker=False) as (base, deps):
        swap(deps, approvals=Approvals())
        inc = await _incident_waiting_for_approval(deps, "ap-1")
        async with chromium(tmp_path / "profile") as page:
            await page.goto(f"{base}/incidents/{inc.id}")
            await page.wait_for("document.getElementById('token-form').matches('.required')")
            buttons = "document.querySelectorAll('#inc-approvals button').length"
            assert await page.evaluate(buttons) == 0
            assert page.errors and all("401" in e for e in page.errors), page.errors

            await page.evaluate(
                f"document.getElementById('token-input').value = {_js(token)};"
                "document.getElementById('token-form').requestSubmit()"
            )
            approve = "#inc-approvals button[data-decision=approve]"
            await page.wait_for(f"!!document.querySelector({_js(approve)})")
            await page.wait_for("document.getElementById('live').textContent === 'live'")
            page.errors.clear()  # the 401s from before the token was given
            await page.evaluate(f"document.querySelector({_js(approve)}).click()")
            said = await page.wait_for("document.getElementById('approval-result').textContent")
            assert "approved by dashboard:token-" in said
            await page.screenshot(ARTIFACTS / "approval.png")
            assert page.errors == []
    assert [(a, d) for a, d, _ in decided] == [("ap-1", "approve")]
    assert decided[0][2].startswith("dashboard:token-")


async def _incident_waiting_for_approval(deps: Any, approval_id: str) -> Any:
    inc, _ = await deps.store.open_incident("container:web", "died", "web exited with code 3")
    await deps.store.put_approval(
        Approval(
            id=approval_id,
            incident_id=inc.id,
            action_hash="h",
            action={"tool": "restart", "target": "container:web"},
            approver="ops@example.test",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
    )
    return await deps.store.update_incident(
        inc.id, status=IncidentStatus.awaiting_approval, detail={"approval_ids": [approval_id]}
    )
